"""JWT-SVIDs signed by a Vault Transit key (the fake Vault of tests/fakes/vault_server.py):
Transit answers in X.509's DER form; the token must still be a valid JWS for PyJWT."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from meshca.core import jwt_svid
from meshca.core.jwt_svid import JwtKey, JwtSigningKey
from meshca.infra.vault import TokenAuth, TransitKeys, VaultConnection, VaultSession
from tests.fakes.vault_server import FakeVault
from tests.jwt_validation import validate


@pytest.fixture
def fake() -> Iterator[FakeVault]:
    vault = FakeVault().serve()
    yield vault
    vault.stop()


@pytest.mark.parametrize("alg", ["ES256", "ES384", "RS256"])
def test_transit_signed_jwt_svids_validate(fake: FakeVault, alg: str) -> None:
    session = VaultSession(VaultConnection(fake.addr, fake.ca_cert), TokenAuth(token=fake.root_token))
    created = TransitKeys(session).create(f"jwt-{secrets.token_hex(4)}", jwt_svid.KEY_TYPES[alg])
    signer = TransitKeys(session).signer(str(created.location))  # as a reload opens it
    now = datetime.now(UTC)
    key = JwtSigningKey(JwtKey(1, jwt_svid.new_kid(), signer.public_key, now + timedelta(days=1)),
                        signer)
    minted = jwt_svid.mint(key, "spiffe://cluster.local/ns/a/sa/b", ["aud"], timedelta(minutes=5), now)
    assert jwt.get_unverified_header(minted.token)["alg"] == alg
    assert validate(minted.token, {"keys": [key.key.jwk()]}, "aud")["sub"] == \
        "spiffe://cluster.local/ns/a/sa/b"
    assert any(p.startswith("transit/sign/") for _, p in fake.requests)
