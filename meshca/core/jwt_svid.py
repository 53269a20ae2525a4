"""JWT-SVIDs: the SPIFFE JWT-SVID spec's algorithms, its keys in JWK form, and validation.

Wider than meshca/core/jwt.py (which accepts exactly what Kubernetes issuers sign with): a
JWT-SVID may be signed with any RS, ES or PS algorithm of 256, 384 or 512 bits (a federated
trust domain picks its own), never `none` or HMAC. The compact form is split with the same
strict base64url decoding. Errors (`InvalidJwtSvid`) say what is wrong, never echo the token.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from meshca.core.jwt import MAX_TOKEN_BYTES, b64url_decode, b64url_encode
from meshca.core.spiffe import SpiffeId

JwtPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
# alg -> (family, hash); for ES also the curve its key must be on.
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
ALGORITHMS = frozenset(f"{family}{bits}" for family in ("RS", "ES", "PS") for bits in _HASHES)
# JWK `crv` <-> cryptography curve, and the coordinate size in bytes.
_CURVES: dict[str, tuple[type[ec.EllipticCurve], int]] = {
    "P-256": (ec.SECP256R1, 32), "P-384": (ec.SECP384R1, 48), "P-521": (ec.SECP521R1, 66)}
_ES_CURVE = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
DEFAULT_LEEWAY = timedelta(seconds=30)  # clock skew forgiven on `exp` and `nbf`


REASONS = ("malformed", "algorithm", "untrusted", "signature", "expired", "audience")


class InvalidJwtSvid(ValueError):
    """The token is not a valid JWT-SVID for this validator; the message says why, `reason`
    (one of REASONS) says it for metrics."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ValidJwtSvid:
    spiffe_id: SpiffeId
    claims: dict[str, Any]
    expiry: datetime


# ---- keys in JWK form ---------------------------------------------------------------------


def public_key_of(jwk: Mapping[str, Any]) -> JwtPublicKey:
    """The public key of an RSA or EC (P-256/384/521) JWK; ValueError for anything else."""
    try:
        if jwk.get("kty") == "RSA":
            n = int.from_bytes(b64url_decode(jwk["n"]), "big")
            e = int.from_bytes(b64url_decode(jwk["e"]), "big")
            return rsa.RSAPublicNumbers(e, n).public_key()
        if jwk.get("kty") == "EC" and jwk.get("crv") in _CURVES:
            curve, _ = _CURVES[jwk["crv"]]
            x = int.from_bytes(b64url_decode(jwk["x"]), "big")
            y = int.from_bytes(b64url_decode(jwk["y"]), "big")
            return ec.EllipticCurvePublicNumbers(x, y, curve()).public_key()
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"unusable {jwk.get('kty')} key: {type(exc).__name__}") from None
    raise ValueError(f"unsupported key type {jwk.get('kty')!r} {jwk.get('crv') or ''}".strip())


def jwk_of(key: JwtPublicKey, kid: str) -> dict[str, str]:
    """The JWK of `key` with `kid`, without `use` or `alg` (a JWT bundle's keys are JWT-SVID
    keys by definition, and an RSA key may sign RS or PS)."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {"kty": "RSA", "kid": kid,
                "n": b64url_encode(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                "e": b64url_encode(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"))}
    for crv, (curve, size) in _CURVES.items():
        if isinstance(key.curve, curve):
            point = key.public_numbers()
            return {"kty": "EC", "kid": kid, "crv": crv,
                    "x": b64url_encode(point.x.to_bytes(size, "big")),
                    "y": b64url_encode(point.y.to_bytes(size, "big"))}
    raise ValueError(f"unsupported curve {key.curve.name}")


def jwks_document(keys: Mapping[str, JwtPublicKey]) -> bytes:
    """A JWK Set (RFC 7517) of `keys` by kid, as the Workload API's JWT bundles carry."""
    return json.dumps({"keys": [jwk_of(key, kid) for kid, key in sorted(keys.items())]},
                      separators=(",", ":")).encode()


# ---- validation ---------------------------------------------------------------------------


def validate(token: str, audience: str,
             keys_for: Callable[[str], Mapping[str, JwtPublicKey] | None], *,
             now: datetime, leeway: timedelta = DEFAULT_LEEWAY) -> ValidJwtSvid:
    """Check `token` as the JWT-SVID spec says: `alg` one of RS/ES/PS 256/384/512, `typ` (if
    any) JWT or JOSE, `sub` a SPIFFE ID whose trust domain has a JWT bundle
    (`keys_for(trust_domain)`, None for none), `kid` one of that bundle's keys, the signature,
    `exp` not passed, `nbf` (if any) reached, and `audience` among `aud`."""
    header, claims, signing_input, signature = _split(token)
    alg = header.get("alg")
    if alg == "none" or not isinstance(alg, str):
        raise InvalidJwtSvid("unsigned token (alg none) refused", "algorithm")
    if alg not in ALGORITHMS:
        raise InvalidJwtSvid(f"algorithm {alg[:16]!r} is not allowed for JWT-SVIDs "
                             "(RS, ES or PS with 256, 384 or 512)", "algorithm")
    if header.get("typ", "JWT") not in ("JWT", "JOSE"):
        raise InvalidJwtSvid("typ must be JWT or JOSE")
    if "crit" in header:
        raise InvalidJwtSvid("critical header parameters are not understood")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidJwtSvid("token has no kid")
    spiffe_id = _subject(claims)
    keys = keys_for(spiffe_id.trust_domain)
    if keys is None:
        raise InvalidJwtSvid(f"no JWT bundle for trust domain {spiffe_id.trust_domain}",
                             "untrusted")
    key = keys.get(kid)
    if key is None:
        raise InvalidJwtSvid(f"kid {kid[:64]!r} is not in the JWT bundle of "
                             f"{spiffe_id.trust_domain}", "untrusted")
    _verify(alg, key, signing_input, signature)
    expiry = _expiry(claims, now, leeway)
    _check_audience(claims, audience)
    return ValidJwtSvid(spiffe_id, claims, expiry)


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a token whose signature is not checked here (the agent's own server's
    answers, read for `sub`, `aud` and `exp`). InvalidJwtSvid when it does not parse."""
    return _split(token)[1]


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    if not token:
        raise InvalidJwtSvid("no token")
    if len(token) > MAX_TOKEN_BYTES:
        raise InvalidJwtSvid(f"token is longer than {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidJwtSvid("token is not a compact JWS (three dot-separated parts)")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2]) if parts[2] else b""
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidJwtSvid("token is not base64url-encoded JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidJwtSvid("token header and claims must be JSON objects")
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature


def _subject(claims: Mapping[str, Any]) -> SpiffeId:
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise InvalidJwtSvid("token has no sub")
    try:
        spiffe_id = SpiffeId.parse(sub)
    except ValueError:
        raise InvalidJwtSvid("sub is not a valid SPIFFE ID") from None
    if not spiffe_id.path:
        raise InvalidJwtSvid("sub names a trust domain, not a workload")
    return spiffe_id


def _verify(alg: str, key: JwtPublicKey, signing_input: bytes, signature: bytes) -> None:
    digest = _HASHES[alg[2:]]()
    try:
        if alg[:2] in ("RS", "PS"):
            if not isinstance(key, rsa.RSAPublicKey):
                raise InvalidJwtSvid(f"{alg} needs an RSA key; the kid names an EC key", "algorithm")
            pad: padding.AsymmetricPadding = padding.PKCS1v15() if alg[:2] == "RS" else \
                padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            key.verify(signature, signing_input, pad, digest)
            return
        crv = _ES_CURVE[alg]
        curve, size = _CURVES[crv]
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, curve):
            raise InvalidJwtSvid(f"{alg} needs a {crv} key; the kid names another", "algorithm")
        if len(signature) != 2 * size:  # JWS carries r || s, not DER
            raise InvalidJwtSvid(f"signature has the wrong length for {alg}", "signature")
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(digest))
    except InvalidSignature:
        raise InvalidJwtSvid("signature does not verify", "signature") from None


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidJwtSvid(f"{name} is not a number")
    return float(value)


def _expiry(claims: Mapping[str, Any], now: datetime, leeway: timedelta) -> datetime:
    exp = _number(claims, "exp")
    if exp is None:
        raise InvalidJwtSvid("token has no exp", "expired")
    now_s, slack = now.timestamp(), leeway.total_seconds()
    if exp <= now_s - slack:
        raise InvalidJwtSvid("token has expired", "expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and nbf > now_s + slack:
        raise InvalidJwtSvid("token is not valid yet (nbf)", "expired")
    try:
        return datetime.fromtimestamp(exp, now.tzinfo)
    except (OverflowError, OSError, ValueError):
        raise InvalidJwtSvid("exp is out of range") from None


def _check_audience(claims: Mapping[str, Any], audience: str) -> None:
    aud = claims.get("aud")
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not values or \
            not all(isinstance(v, str) for v in values):
        raise InvalidJwtSvid("token has no aud", "audience")
    if audience not in values:
        raise InvalidJwtSvid(f"audience {audience[:128]!r} is not in the token's aud", "audience")
