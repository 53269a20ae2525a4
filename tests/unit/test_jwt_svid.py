"""JWT-SVID validation (meshca/core/jwt_svid.py) against tokens signed by PyJWT, an independent
implementation: every algorithm the spec allows, and each way a token must be refused."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt as pyjwt
import pytest

from meshca.core.jwt_svid import (
    ALGORITHMS,
    InvalidJwtSvid,
    JwtPublicKey,
    jwk_of,
    jwks_document,
    public_key_of,
    unverified_claims,
    validate,
)
from tests.unit.pki import ec_key, rsa_key

NOW = datetime.now(UTC).replace(microsecond=0)
TD = "a.test"
SUB = f"spiffe://{TD}/ns/default/sa/web"
KEYS: dict[str, Any] = {
    "ES256": ec_key("secp256r1", 900), "ES384": ec_key("secp384r1", 901),
    "ES512": ec_key("secp521r1", 902), "RS": rsa_key(2048, 0),
}


def key_for(alg: str) -> Any:
    return KEYS["RS"] if alg[:2] in ("RS", "PS") else KEYS[alg]


def bundle(*algs: str) -> dict[str, JwtPublicKey]:
    return {f"kid-{alg}": key_for(alg).public_key() for alg in algs}


def token(alg: str = "ES256", *, kid: str | None = None, headers: Mapping[str, Any] = {},
          **claims: Any) -> str:
    body: dict[str, Any] = {"sub": SUB, "aud": ["db"], "exp": int(NOW.timestamp()) + 300,
                            "iat": int(NOW.timestamp())}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return pyjwt.encode(body, key_for(alg), algorithm=alg,
                        headers={"kid": kid or f"kid-{alg}", "typ": "JWT", **headers})


def check(svid: str, audience: str = "db",
          keys: Mapping[str, Mapping[str, JwtPublicKey]] | None = None) -> Any:
    held = keys if keys is not None else {TD: bundle(*sorted(ALGORITHMS))}
    return validate(svid, audience, held.get, now=NOW)


def refused(svid: str, reason: str, audience: str = "db", **kwargs: Any) -> str:
    with pytest.raises(InvalidJwtSvid) as failure:
        check(svid, audience, **kwargs)
    assert failure.value.reason == reason, str(failure.value)
    return str(failure.value)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("alg", sorted(ALGORITHMS))
def test_every_spec_algorithm_validates(alg: str) -> None:
    valid = check(token(alg, aud=["db", "cache"], extra="x"))
    assert str(valid.spiffe_id) == SUB
    assert valid.claims["extra"] == "x" and valid.claims["aud"] == ["db", "cache"]
    assert valid.expiry == NOW + timedelta(seconds=300)


def test_a_single_string_audience_and_typ_jose_are_accepted() -> None:
    assert check(token(aud="db", headers={"typ": "JOSE"})).claims["aud"] == "db"


def test_alg_none_is_refused() -> None:
    unsigned = f"{b64({'alg': 'none', 'kid': 'kid-ES256'})}.{b64({'sub': SUB, 'aud': 'db', 'exp': 2**31})}."
    assert "alg none" in refused(unsigned, "algorithm")


def test_hmac_is_refused_before_any_key_is_used() -> None:
    # The classic confusion: an HS256 token naming an RSA key's kid.
    forged = pyjwt.encode({"sub": SUB, "aud": "db", "exp": 2**31}, "x" * 32, algorithm="HS256",
                          headers={"kid": "kid-RS256"})
    assert "not allowed" in refused(forged, "algorithm")


def test_key_of_the_wrong_type_for_the_algorithm_is_refused() -> None:
    # An ES256 header naming an RSA key's kid, and an ES384 header naming a P-256 key.
    mixed = token("ES256", kid="kid-RS256")
    refused(mixed, "algorithm")
    refused(token("ES384", kid="kid-ES256"), "algorithm",
            keys={TD: {"kid-ES256": KEYS["ES256"].public_key()}})


def test_unknown_kid_and_foreign_trust_domain_are_untrusted() -> None:
    assert "kid" in refused(token(kid="nobody"), "untrusted")
    assert "b.test" in refused(token(sub="spiffe://b.test/ns/x/sa/y"), "untrusted")
    no_kid = pyjwt.encode({"sub": SUB, "aud": "db", "exp": 2**31}, KEYS["ES256"], algorithm="ES256")
    assert "kid" in refused(no_kid, "malformed")


def test_a_signature_by_another_key_or_a_tampered_body_fails() -> None:
    other = pyjwt.encode({"sub": SUB, "aud": "db", "exp": 2**31}, ec_key("secp256r1", 903),
                         algorithm="ES256", headers={"kid": "kid-ES256"})
    refused(other, "signature")
    head, _, sig = token().split(".")
    tampered = f"{head}.{b64({'sub': SUB, 'aud': ['db', 'admin'], 'exp': 2**31})}.{sig}"
    refused(tampered, "signature")
    refused(f"{head}.{b64({'sub': SUB})}.{sig[:-4]}", "signature")  # wrong length


def test_time_claims() -> None:
    assert "expired" in refused(token(exp=int(NOW.timestamp()) - 120), "expired")
    check(token(exp=int(NOW.timestamp()) - 5))  # within the leeway for clock skew
    refused(token(exp=None), "expired")
    refused(token(exp="soon"), "malformed")
    refused(token(nbf=int(NOW.timestamp()) + 600), "expired")


def test_audience_claims() -> None:
    assert "'web'" in refused(token(), "audience", audience="web")
    refused(token(aud=None), "audience")
    refused(token(aud=[]), "audience")
    refused(token(aud=[1]), "audience")


@pytest.mark.parametrize("sub", [None, "web", "spiffe://A.test/x", f"spiffe://{TD}", 7])
def test_sub_must_be_a_workload_spiffe_id(sub: Any) -> None:
    refused(token(sub=sub), "malformed")


@pytest.mark.parametrize("svid", ["", "a.b", "a.b.c.d", "!!.x.y", f"{b64({'alg': 'ES256'})}.e30"])
def test_garbage_is_malformed(svid: str) -> None:
    refused(svid, "malformed")


def test_typ_and_crit_headers() -> None:
    refused(token(headers={"typ": "at+jwt"}), "malformed")
    refused(token(headers={"crit": ["exp"]}), "malformed")


def test_messages_never_echo_the_token() -> None:
    bad = token(aud=["other"])
    message = refused(bad, "audience")
    assert bad.split(".")[2] not in message and bad.split(".")[1] not in message


@pytest.mark.parametrize("name", ["ES256", "ES384", "ES512", "RS"])
def test_jwk_round_trip_and_pyjwt_reads_the_jwks(name: str) -> None:
    public = KEYS[name].public_key()
    assert public_key_of(jwk_of(public, "k1")) == public
    document = jwks_document({"k1": public})
    (parsed,) = pyjwt.PyJWKSet.from_json(document.decode()).keys
    assert parsed.key_id == "k1"
    numbers = parsed.key.public_numbers()
    assert numbers == public.public_numbers()
    assert "use" not in json.loads(document)["keys"][0]


@pytest.mark.parametrize("jwk", [{"kty": "OKP", "crv": "Ed25519", "x": "AA"},
                                 {"kty": "EC", "crv": "P-256K", "x": "AA", "y": "AA"},
                                 {"kty": "EC", "crv": "P-256", "x": "AA"},
                                 {"kty": "RSA", "n": "@@", "e": "AQAB"}])
def test_unusable_jwks_are_refused(jwk: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        public_key_of(jwk)


def test_unverified_claims() -> None:
    assert unverified_claims(token())["sub"] == SUB
    with pytest.raises(InvalidJwtSvid):
        unverified_claims("x.y")


def test_ec_point_off_the_curve_is_refused() -> None:
    jwk = jwk_of(KEYS["ES256"].public_key(), "k")
    jwk["y"] = jwk["x"]
    with pytest.raises(ValueError):
        public_key_of(jwk)

