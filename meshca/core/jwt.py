"""Compact JWS (JWT) decoding and signature checks, RS256 and ES256 only.

Written against RFC 7515/7518 rather than taken from a general JWT library so that the
accepted algorithms are exactly the two Kubernetes issuers use: `none`, HMAC and the rest
are refused before any key is looked at. Error messages never echo token material.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from meshca.errors import AuthenticationError

MAX_TOKEN_BYTES = 16 * 1024
ALGORITHMS = frozenset({"RS256", "ES256"})
VerificationKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Jws:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        return str(self.header.get("alg", ""))

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def b64url_decode(part: str) -> bytes:
    # RFC 7515 §2: the URL-safe alphabet only. The standard decoder silently skips other
    # characters, which would give one signature many accepted spellings.
    if not _B64URL.fullmatch(part):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode(token: str) -> Jws:
    """Split and decode a compact JWS; nothing is trusted yet."""
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthenticationError(f"token is longer than {MAX_TOKEN_BYTES} bytes", reason="too_large")
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthenticationError(
            "token is not a compact JWS (three dot-separated parts)", reason="malformed"
        )
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        # RecursionError: JSON nested too deeply for the parser, still just a malformed token.
        raise AuthenticationError("token is not valid base64url-encoded JSON", reason="malformed") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise AuthenticationError("token header and claims must be JSON objects", reason="malformed")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise AuthenticationError(
            "token algorithm is not accepted; RS256 or ES256 required", reason="algorithm"
        )
    if "crit" in header:
        raise AuthenticationError(
            "token carries critical header parameters meshca does not know", reason="malformed"
        )
    # Only now the signature, so that `alg: none` with its empty signature is named as such.
    try:
        signature = b64url_decode(parts[2])
    except (ValueError, binascii.Error):
        raise AuthenticationError("token signature is not valid base64url", reason="malformed") from None
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    return Jws(header, claims, signing_input, signature)


def verify(jws: Jws, key: VerificationKey) -> None:
    """Check the signature with `key`, whose type must match the algorithm."""
    try:
        if jws.alg == "RS256":
            if not isinstance(key, rsa.RSAPublicKey):
                raise AuthenticationError(
                    "token algorithm does not match the issuer key type", reason="algorithm"
                )
            key.verify(jws.signature, jws.signing_input, padding.PKCS1v15(), hashes.SHA256())
            return
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise AuthenticationError(
                "token algorithm does not match the issuer key type", reason="algorithm"
            )
        if len(jws.signature) != 64:
            raise AuthenticationError("token signature has the wrong length for ES256", reason="signature")
        r = int.from_bytes(jws.signature[:32], "big")
        s = int.from_bytes(jws.signature[32:], "big")
        key.verify(encode_dss_signature(r, s), jws.signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise AuthenticationError("token signature does not verify", reason="signature") from None


def sign(claims: dict[str, Any], key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> str:
    """Make a compact JWS; meshca uses it only for development tokens."""
    alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    header = {"alg": alg, "kid": kid}
    head = b64url_encode(json.dumps(header, separators=(",", ":")).encode())
    body = b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{head}.{body}".encode("ascii")
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{head}.{body}.{b64url_encode(signature)}"
