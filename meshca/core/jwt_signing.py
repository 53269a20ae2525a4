"""Minting JWT-SVIDs (SPIFFE JWT-SVID spec): the signing key's JWK and kid, request checks.
(Validation is core/jwt_svid.py's.)

Pure: the key signs through `remote_signing.Signer`, so a Vault Transit key mints exactly like
a local one. Signers return what X.509 wants (DER ECDSA-Sig-Value for EC keys); JWS wants the
fixed-size big-endian r||s of RFC 7518 §3.4, so EC signatures are re-encoded here.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from meshca.core.jwt import b64url_encode
from meshca.core.keys import KeyType
from meshca.core.remote_signing import LocalSigner, SignatureRejected, Signer, SigningPublicKey, hash_for
from meshca.errors import InvalidRequest

# --jwt-key-type -> the key meshca creates. RSA 2048 is what RS256 verifiers universally take.
KEY_TYPES: dict[str, KeyType] = {"ES256": KeyType.EC_P256, "ES384": KeyType.EC_P384,
                                 "RS256": KeyType.RSA_2048}
MAX_AUDIENCES = 16
MAX_AUDIENCE_LENGTH = 512
_CURVES = {"secp256r1": ("P-256", 32, "ES256"), "secp384r1": ("P-384", 48, "ES384"),
           "secp521r1": ("P-521", 66, "ES512")}


def new_kid() -> str:
    """128 random bits, base64url: unique without revealing anything about the key."""
    return b64url_encode(secrets.token_bytes(16))


def algorithm_for(public_key: SigningPublicKey) -> str:
    """The JWS `alg` a key signs with (the hash is `remote_signing.hash_for`'s choice)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return _CURVES[public_key.curve.name][2]
    return "RS256"


def public_jwk(public_key: SigningPublicKey) -> dict[str, Any]:
    """The public half as JWK members (RFC 7518 §6): kty with crv/x/y, or n/e."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        crv, size, _ = _CURVES[public_key.curve.name]
        point = public_key.public_numbers()
        return {"kty": "EC", "crv": crv, "x": b64url_encode(point.x.to_bytes(size, "big")),
                "y": b64url_encode(point.y.to_bytes(size, "big"))}
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        return {"kty": "RSA", "n": b64url_encode(_unsigned(numbers.n)),
                "e": b64url_encode(_unsigned(numbers.e))}
    raise ValueError(f"unsupported key type {type(public_key).__name__}")


@dataclass(frozen=True, slots=True)
class JwtKey:
    """A published JWT-SVID key: validators find it by `kid` in the bundle."""

    generation_id: int
    kid: str
    public_key: SigningPublicKey = field(repr=False)
    not_after: datetime

    def jwk(self) -> dict[str, Any]:
        return {"use": "jwt-svid", "kid": self.kid, **public_jwk(self.public_key)}


@dataclass(frozen=True, slots=True)
class JwtSigningKey:
    """The active JWT key and its signer: what a minting process holds."""

    key: JwtKey
    signer: Signer = field(repr=False)

    @property
    def alg(self) -> str:
        return algorithm_for(self.key.public_key)


@dataclass(frozen=True, slots=True)
class JwtKeySet:
    """What one process loaded: the key that signs (None: cannot mint) and the published keys."""

    signing: JwtSigningKey | None
    published: tuple[JwtKey, ...]


EMPTY_KEY_SET = JwtKeySet(None, ())


def check_audience(audience: Sequence[str]) -> tuple[str, ...]:
    """`aud` as requested: one or more non-empty strings, bounded; InvalidRequest otherwise."""
    if not audience:
        raise InvalidRequest("a JWT-SVID needs at least one audience")
    if len(audience) > MAX_AUDIENCES:
        raise InvalidRequest(f"at most {MAX_AUDIENCES} audiences")
    for value in audience:
        if not value or not value.strip():
            raise InvalidRequest("an audience must not be empty")
        if len(value) > MAX_AUDIENCE_LENGTH:
            raise InvalidRequest(f"an audience must be at most {MAX_AUDIENCE_LENGTH} characters")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise InvalidRequest("an audience must not contain control characters")
    return tuple(dict.fromkeys(audience))  # repeated values add nothing


def token_lifetime(requested: timedelta, default: timedelta, maximum: timedelta) -> timedelta:
    """0 asks for `default`; longer than `maximum` is refused (a caller that wants a long-lived
    token learns it cannot have one, rather than getting a shorter one it did not expect)."""
    if requested < timedelta(0):
        raise InvalidRequest("ttl_seconds must not be negative")
    if requested == timedelta(0):
        return default
    if requested > maximum:
        raise InvalidRequest(f"ttl_seconds exceeds the longest JWT-SVID this server mints "
                             f"({int(maximum.total_seconds())} s)")
    return requested


@dataclass(frozen=True, slots=True)
class MintedJwt:
    token: str
    expires_at: datetime


def mint(key: JwtSigningKey, subject: str, audience: Sequence[str], ttl: timedelta,
         now: datetime) -> MintedJwt:
    """A signed JWT-SVID for `subject`. `exp` never passes the key's notAfter, so a retired
    key leaves the bundle only after everything it signed expired. Whole seconds (NumericDate);
    `exp` is rounded down so the token never lives longer than asked."""
    if now >= key.key.not_after:
        raise ValueError("the JWT signing key has expired")
    issued = int(now.timestamp())
    expires = min(int((now + ttl).timestamp()), int(key.key.not_after.timestamp()))
    if expires <= issued:
        raise ValueError("no lifetime left on the JWT signing key")
    header = {"alg": key.alg, "kid": key.key.kid, "typ": "JWT"}
    aud: str | list[str] = audience[0] if len(audience) == 1 else list(audience)
    claims = {"sub": subject, "aud": aud, "exp": expires, "iat": issued}
    signing_input = f"{_segment(header)}.{_segment(claims)}".encode("ascii")
    signature = _jws_signature(key, signing_input)
    token = f"{signing_input.decode('ascii')}.{b64url_encode(signature)}"
    return MintedJwt(token, datetime.fromtimestamp(expires, tz=now.tzinfo))


def _jws_signature(key: JwtSigningKey, signing_input: bytes) -> bytes:
    public = key.key.public_key
    der = key.signer.sign(signing_input)
    if not isinstance(key.signer, LocalSigner):
        _verify(public, der, signing_input)  # a remote signer's answer is checked before use
    if isinstance(public, ec.EllipticCurvePublicKey):
        size = _CURVES[public.curve.name][1]
        r, s = decode_dss_signature(der)
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return der  # RSASSA-PKCS1-v1_5: the same bytes in X.509 and JWS


def _verify(public: SigningPublicKey, signature: bytes, data: bytes) -> None:
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, data, ec.ECDSA(hash_for(public)))
        else:
            public.verify(signature, data, padding.PKCS1v15(), hash_for(public))
    except InvalidSignature:
        raise SignatureRejected("the remote JWT signature does not verify") from None


def _segment(value: dict[str, Any]) -> str:
    return b64url_encode(json.dumps(value, separators=(",", ":")).encode())


def _unsigned(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")
