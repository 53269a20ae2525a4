"""JSON Web Key Sets: public keys of a token issuer, keyed by `kid`."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshca.core.jwt import VerificationKey, b64url_decode, b64url_encode


def parse_jwks(document: dict[str, Any]) -> dict[str, VerificationKey]:
    """Keys usable for signature checks; unknown or unusable entries are skipped, not fatal."""
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise ValueError("JWKS document has no 'keys' list")
    result: dict[str, VerificationKey] = {}
    for entry in keys:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            key = _public_key(entry)
        except (ValueError, KeyError, TypeError):
            continue
        if key is None:
            continue
        kid = entry.get("kid")
        result[kid if isinstance(kid, str) else key_id(key)] = key
    return result


def _public_key(entry: dict[str, Any]) -> VerificationKey | None:
    kty = entry.get("kty")
    if kty == "RSA":
        n = int.from_bytes(b64url_decode(entry["n"]), "big")
        e = int.from_bytes(b64url_decode(entry["e"]), "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if kty == "EC" and entry.get("crv") == "P-256":
        x = int.from_bytes(b64url_decode(entry["x"]), "big")
        y = int.from_bytes(b64url_decode(entry["y"]), "big")
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    return None


def to_jwk(key: VerificationKey, kid: str) -> dict[str, str]:
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {
            "use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256",
            "n": b64url_encode(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": b64url_encode(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
        }
    point = key.public_numbers()
    return {
        "use": "sig", "kty": "EC", "kid": kid, "alg": "ES256", "crv": "P-256",
        "x": b64url_encode(point.x.to_bytes(32, "big")),
        "y": b64url_encode(point.y.to_bytes(32, "big")),
    }


def key_id(key: VerificationKey) -> str:
    """A stable kid: SHA-256 of the key's canonical JWK members (RFC 7638 style)."""
    jwk = to_jwk(key, "")
    members = {k: jwk[k] for k in sorted(jwk) if k in ("crv", "e", "kty", "n", "x", "y")}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":")).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
