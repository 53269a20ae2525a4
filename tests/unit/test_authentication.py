"""Bearer-token extraction and local verification of projected tokens, on a fixed clock."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from meshca.core import jwt
from meshca.core.jwt import VerificationKey
from meshca.core.sa_token import ServiceAccount, TokenRules
from meshca.errors import AuthenticationError
from meshca.service.authentication import bearer_token
from meshca.service.token_validation import JwksValidator
from tests.unit.pki import ec_key, rsa_key

ISSUER = "https://issuer.example"
RULES = TokenRules(issuer=ISSUER, audiences=frozenset({"istio-ca"}))
START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
EC_A, EC_B, RSA_C = ec_key("secp256r1", 20), ec_key("secp256r1", 21), rsa_key(2048, 2)


class FixedClock:
    def __init__(self, now: datetime = START) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current


class KeySource:
    """The issuer's keys as the validator sees them; counts how often it is asked.

    `on_refresh`, when set, is what a refetch finds (a rotated key set).
    """

    def __init__(self, keys: Mapping[str, VerificationKey]) -> None:
        self.current = dict(keys)
        self.calls = 0
        self.refreshes = 0
        self.on_refresh: dict[str, VerificationKey] | None = None

    def issuer(self) -> str | None:
        return ISSUER

    def keys(self) -> Mapping[str, VerificationKey]:
        self.calls += 1
        return self.current

    async def refresh(self) -> bool:
        self.refreshes += 1
        if self.on_refresh is None:
            return False
        self.current = self.on_refresh
        return True


class SyncValidator:
    """JwksValidator driven from plain tests."""

    def __init__(self, validator: JwksValidator) -> None:
        self._validator = validator

    def authenticate(self, token: str) -> ServiceAccount:
        return asyncio.run(self._validator.validate(token))


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(START.timestamp())
    base = {
        "iss": ISSUER, "sub": "system:serviceaccount:shop:web", "aud": ["istio-ca"],
        "exp": now + 600, "iat": now, "nbf": now,
        "kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": "web", "uid": "u1"},
                          "pod": {"name": "web-0", "uid": "p1"}, "node": {"name": "n1", "uid": "n"}},
    }
    return {**base, **changes}


def _token_without_kid(claims: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> str:
    head = jwt.b64url_encode(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
    body = jwt.b64url_encode(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{head}.{body}.{jwt.b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _authenticator(keys: Mapping[str, VerificationKey], clock: FixedClock | None = None,
                   ) -> tuple[SyncValidator, KeySource]:
    source = KeySource(keys)
    clock = clock or FixedClock()
    validator = JwksValidator(source, RULES.audiences, RULES.skew_seconds,
                              now=lambda: clock.current.timestamp())
    return SyncValidator(validator), source


# ---- bearer_token ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("values", "token"),
    [(["Bearer abc.def.ghi"], "abc.def.ghi"), (["Bearer  abc "], "abc"), (("Bearer x",), "x")],
)
def test_bearer_token_extracts_the_token(values: Any, token: str) -> None:
    assert bearer_token(values) == token


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([], "no authorization metadata; expected 'Bearer <token>'"),
        ((), "no authorization metadata"),
        (["Bearer a", "Bearer b"], "more than one authorization value"),
        (["Bearer a", "Bearer a"], "more than one authorization value"),
        (["bearer abc"], "authorization metadata must start with 'Bearer '"),
        (["BEARER abc"], "must start with 'Bearer '"),
        (["Basic dXNlcjpwYXNz"], "must start with 'Bearer '"),
        (["Bearerabc"], "must start with 'Bearer '"),
        (["Bearer"], "must start with 'Bearer '"),
        (["abc.def.ghi"], "must start with 'Bearer '"),
        ([" Bearer abc"], "must start with 'Bearer '"),
        ([""], "must start with 'Bearer '"),
        (["Bearer "], "authorization metadata carries an empty bearer token"),
        (["Bearer    "], "empty bearer token"),
        (["Bearer \t\n"], "empty bearer token"),
    ],
)
def test_bearer_token_refusals(values: Any, message: str) -> None:
    with pytest.raises(AuthenticationError, match=re.escape(message)):
        bearer_token(values)


# ---- JwksValidator -----------------------------------------------------------------

def test_kid_selects_the_key_among_several() -> None:
    auth, source = _authenticator({"a": EC_A.public_key(), "b": EC_B.public_key(),
                                   "c": RSA_C.public_key()})
    for key, kid in ((EC_A, "a"), (EC_B, "b"), (RSA_C, "c")):
        account = auth.authenticate(jwt.sign(_claims(), key, kid))
        assert account == ServiceAccount(namespace="shop", name="web", pod_name="web-0", pod_uid="p1",
                                         node_name="n1", expires_at=int(START.timestamp()) + 600)
    assert source.calls == 3


def test_unknown_kid_is_refused_even_with_a_single_key() -> None:
    auth, _ = _authenticator({"a": EC_A.public_key()})
    with pytest.raises(AuthenticationError, match="token key id is not among the issuer's keys"):
        auth.authenticate(jwt.sign(_claims(), EC_A, "not-a"))


def test_kid_naming_another_key_does_not_verify() -> None:
    auth, _ = _authenticator({"a": EC_A.public_key(), "b": EC_B.public_key()})
    with pytest.raises(AuthenticationError, match="token signature does not verify"):
        auth.authenticate(jwt.sign(_claims(), EC_B, "a"))


def test_kid_naming_a_key_of_the_other_type_is_refused() -> None:
    auth, _ = _authenticator({"a": EC_A.public_key(), "c": RSA_C.public_key()})
    with pytest.raises(AuthenticationError, match="does not match the issuer key type"):
        auth.authenticate(jwt.sign(_claims(), EC_A, "c"))


def test_no_kid_with_a_single_key_uses_it() -> None:
    auth, _ = _authenticator({"only": EC_A.public_key()})
    assert auth.authenticate(_token_without_kid(_claims(), EC_A)).name == "web"
    other, _ = _authenticator({"only": EC_B.public_key()})
    with pytest.raises(AuthenticationError, match="token signature does not verify"):
        other.authenticate(_token_without_kid(_claims(), EC_A))


def test_no_kid_with_several_keys_is_refused() -> None:
    auth, _ = _authenticator({"a": EC_A.public_key(), "b": EC_B.public_key()})
    with pytest.raises(AuthenticationError, match="token has no key id and the issuer has several keys"):
        auth.authenticate(_token_without_kid(_claims(), EC_A))


def test_no_keys_at_all_is_refused() -> None:
    auth, _ = _authenticator({})
    with pytest.raises(AuthenticationError):
        auth.authenticate(_token_without_kid(_claims(), EC_A))
    with pytest.raises(AuthenticationError, match="not among the issuer's keys"):
        auth.authenticate(jwt.sign(_claims(), EC_A, "a"))


def test_keys_are_asked_for_on_every_call_so_rotation_is_seen() -> None:
    auth, source = _authenticator({"a": EC_A.public_key()})
    token_b = jwt.sign(_claims(), EC_B, "b")
    with pytest.raises(AuthenticationError, match="not among"):
        auth.authenticate(token_b)
    source.current["b"] = EC_B.public_key()
    assert auth.authenticate(token_b).name == "web"
    # The unknown kid looked twice (before and after its refetch), the known one once.
    assert source.calls == 3


def test_an_unknown_kid_triggers_one_refetch_that_can_find_a_rotated_key() -> None:
    auth, source = _authenticator({"a": EC_A.public_key()})
    source.on_refresh = {"a": EC_A.public_key(), "b": EC_B.public_key()}
    assert auth.authenticate(jwt.sign(_claims(), EC_B, "b")).name == "web"
    assert source.refreshes == 1
    source.on_refresh = None
    with pytest.raises(AuthenticationError, match="not among"):
        auth.authenticate(jwt.sign(_claims(), EC_A, "zzz"))
    assert source.refreshes == 2


def test_malformed_or_unaccepted_tokens_are_refused_before_keys_are_looked_at() -> None:
    auth, source = _authenticator({"a": EC_A.public_key()})
    none_alg = jwt.b64url_encode(b'{"alg":"none"}') + "." + jwt.b64url_encode(b"{}") + "."
    for token in ("not-a-jwt", none_alg, "a.b.c"):
        with pytest.raises(AuthenticationError):
            auth.authenticate(token)
    assert source.calls == 0


def test_claims_are_checked_against_the_clock() -> None:
    clock = FixedClock()
    auth, _ = _authenticator({"a": EC_A.public_key()}, clock)
    token = jwt.sign(_claims(), EC_A, "a")
    assert auth.authenticate(token).name == "web"
    clock.current = START + timedelta(seconds=600 + 60)  # exp + skew: still accepted
    assert auth.authenticate(token).name == "web"
    clock.current = START + timedelta(seconds=600 + 61)
    with pytest.raises(AuthenticationError, match="token has expired"):
        auth.authenticate(token)
    clock.current = START - timedelta(seconds=61)
    with pytest.raises(AuthenticationError, match="not valid yet"):
        auth.authenticate(token)


def test_a_valid_signature_does_not_excuse_bad_claims() -> None:
    auth, _ = _authenticator({"a": EC_A.public_key()})
    with pytest.raises(AuthenticationError, match="audience"):
        auth.authenticate(jwt.sign(_claims(aud=["api"]), EC_A, "a"))
    with pytest.raises(AuthenticationError, match="issuer"):
        auth.authenticate(jwt.sign(_claims(iss="https://elsewhere"), EC_A, "a"))
    with pytest.raises(AuthenticationError, match="legacy"):
        auth.authenticate(jwt.sign(_claims(iss="kubernetes/serviceaccount"), EC_A, "a"))


def test_signature_is_checked_before_claims() -> None:
    # A forged token with bad claims must fail on its signature, saying nothing of its claims.
    auth, _ = _authenticator({"a": EC_A.public_key()})
    with pytest.raises(AuthenticationError, match="token signature does not verify"):
        auth.authenticate(jwt.sign(_claims(aud=["api"]), EC_B, "a"))
