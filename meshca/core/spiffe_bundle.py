"""The trust bundle in SPIFFE's JWK Set form (SPIFFE Trust Domain and Bundle spec)."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from meshca.core.bundle import TrustBundle
from meshca.core.jwt_signing import JwtKey, public_jwk


def spiffe_jwks(bundle: TrustBundle, sequence: int, refresh_hint_seconds: int,
                jwt_keys: Iterable[JwtKey] = ()) -> dict[str, Any]:
    """`x509-svid` keys for the roots, then `jwt-svid` keys (with their kid) for JWT-SVIDs."""
    return {
        "keys": [_x509_svid_key(root) for root in bundle.roots] + [k.jwk() for k in jwt_keys],
        "spiffe_sequence": sequence,
        "spiffe_refresh_hint": refresh_hint_seconds,
    }


def _x509_svid_key(cert: x509.Certificate) -> dict[str, Any]:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ValueError(f"unsupported root key type {type(key).__name__}")
    jwk: dict[str, Any] = {"use": "x509-svid", **public_jwk(key)}
    # x5c is standard base64 (RFC 7517 §4.7), not base64url; exactly one certificate.
    jwk["x5c"] = [base64.b64encode(cert.public_bytes(Encoding.DER)).decode("ascii")]
    return jwk
