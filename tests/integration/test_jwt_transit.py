"""JWT-SVIDs signed by a Vault Transit key (the fake Vault of tests/fakes/vault_server.py):
Transit answers in X.509's DER form; the token must still be a valid JWS for PyJWT."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from sqlalchemy import select

from meshca.core import jwt_signing
from meshca.core.jwt_signing import JwtKey, JwtSigningKey
from meshca.gen.meshca.v1 import svid_pb2, svid_pb2_grpc
from meshca.infra.db.engine import open_engine
from meshca.infra.db.schema import ca_generations
from meshca.infra.vault import TokenAuth, TransitKeys, VaultConnection, VaultSession
from tests.fakes.vault_server import FakeVault
from tests.integration.test_jwt_svid import bundle_of
from tests.integration.test_vault_server import _token, _vault_args
from tests.jwt_validation import validate
from tests.support import start_meshca


@pytest.fixture
def fake() -> Iterator[FakeVault]:
    vault = FakeVault().serve()
    yield vault
    vault.stop()


@pytest.mark.parametrize("alg", ["ES256", "ES384", "RS256"])
def test_transit_signed_jwt_svids_validate(fake: FakeVault, alg: str) -> None:
    session = VaultSession(VaultConnection(fake.addr, fake.ca_cert), TokenAuth(token=fake.root_token))
    created = TransitKeys(session).create(f"jwt-{secrets.token_hex(4)}", jwt_signing.KEY_TYPES[alg])
    signer = TransitKeys(session).signer(str(created.location))  # as a reload opens it
    now = datetime.now(UTC)
    key = JwtSigningKey(JwtKey(1, jwt_signing.new_kid(), signer.public_key, now + timedelta(days=1)),
                        signer)
    minted = jwt_signing.mint(key, "spiffe://cluster.local/ns/a/sa/b", ["aud"], timedelta(minutes=5), now)
    assert jwt.get_unverified_header(minted.token)["alg"] == alg
    assert validate(minted.token, {"keys": [key.key.jwk()]}, "aud")["sub"] == \
        "spiffe://cluster.local/ns/a/sa/b"
    assert any(p.startswith("transit/sign/") for _, p in fake.requests)


def test_a_server_with_jwt_keys_in_transit_mints_valid_tokens(fake: FakeVault, tmp_path: Path) -> None:
    """--keystore vault-transit --vault-transit-intermediate: the JWT key is created in
    Transit, every token is signed there, and PyJWT accepts them with the bundle alone."""
    server = start_meshca(tmp_path / "data", *_vault_args(fake, _token(fake, tmp_path)),
                          "--vault-transit-intermediate")
    try:
        engine = open_engine(server.database_url)
        try:
            with engine.connect() as connection:
                (location,) = connection.execute(select(ca_generations.c.key_location).where(
                    ca_generations.c.kind == "jwt")).scalars()
        finally:
            engine.dispose()
        assert location.startswith("vault-transit:")
        stub = svid_pb2_grpc.SvidServiceStub(server.channel())
        signs_before = sum(1 for _, p in fake.requests if p.startswith("transit/sign/"))
        for _ in range(3):
            minted = stub.MintJWTSVID(svid_pb2.MintJWTSVIDRequest(audience=["aud"]), timeout=30,
                                      metadata=[("authorization", f"Bearer {server.token()}")])
            assert validate(minted.token, bundle_of(server), "aud")["sub"] == minted.spiffe_id
        assert sum(1 for _, p in fake.requests if p.startswith("transit/sign/")) >= signs_before + 3
    finally:
        server.stop()
