"""The trust bundle in SPIFFE's JWK Set form (SPIFFE Trust Domain and Bundle spec)."""

from __future__ import annotations

import base64
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from meshca.core.bundle import TrustBundle
from meshca.core.jwt import b64url_encode

_CURVES = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48), "secp521r1": ("P-521", 66)}


def spiffe_jwks(bundle: TrustBundle, sequence: int, refresh_hint_seconds: int) -> dict[str, Any]:
    return {
        "keys": [_x509_svid_key(root) for root in bundle.roots],
        "spiffe_sequence": sequence,
        "spiffe_refresh_hint": refresh_hint_seconds,
    }


def _x509_svid_key(cert: x509.Certificate) -> dict[str, Any]:
    key = cert.public_key()
    jwk: dict[str, Any] = {"use": "x509-svid"}
    if isinstance(key, ec.EllipticCurvePublicKey):
        crv, size = _CURVES[key.curve.name]
        point = key.public_numbers()
        jwk |= {"kty": "EC", "crv": crv, "x": b64url_encode(point.x.to_bytes(size, "big")),
                "y": b64url_encode(point.y.to_bytes(size, "big"))}
    elif isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        jwk |= {"kty": "RSA",
                "n": b64url_encode(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                "e": b64url_encode(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"))}
    else:
        raise ValueError(f"unsupported root key type {type(key).__name__}")
    # x5c is standard base64 (RFC 7517 §4.7), not base64url; exactly one certificate.
    jwk["x5c"] = [base64.b64encode(cert.public_bytes(Encoding.DER)).decode("ascii")]
    return jwk
