"""meshca serving with its root key in Vault Transit (the in-test fake Vault over HTTPS).

The fake answers as Vault documents; the same tests would pass against a real Vault with the
same mounts and policy (see docs/vault.md).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from meshca.infra.db.engine import open_engine
from meshca.infra.db.schema import ca_generations
from tests.fakes.vault_server import FakeVault
from tests.integration.test_ca_rotation import api, bundle_roots, eventually, issue, metrics
from tests.support import AdminClient, MeshcaProcess, start_meshca
from tests.unit.pki import ec_key, make_root

# Only what meshca needs: create and read Transit keys, sign with them.
MESHCA_POLICY = {"transit/keys/*": {"create", "update", "read"}, "transit/sign/*": {"update"}}


def _vault_args(fake: FakeVault, token_file: Path) -> list[str]:
    return ["--keystore", "vault-transit", "--vault-addr", fake.addr,
            "--vault-ca-cert", str(fake.ca_cert), "--vault-token-file", str(token_file)]


def _token(fake: FakeVault, tmp_path: Path) -> Path:
    fake.add_policy("meshca", MESHCA_POLICY)
    path = tmp_path / "vault-token"
    path.write_text(fake.issue_token(["meshca"], ttl=3600) + "\n")
    return path


@pytest.fixture
def vault() -> Iterator[FakeVault]:
    fake = FakeVault().serve()
    yield fake
    fake.stop()


def _key_locations(server: MeshcaProcess) -> dict[str, str]:
    engine = open_engine(server.database_url)
    try:
        with engine.connect() as connection:
            return {str(r.kind) + str(r.id): str(r.key_location)
                    for r in connection.execute(select(ca_generations))}
    finally:
        engine.dispose()


def test_the_root_key_lives_in_transit_and_never_reaches_meshca(vault: FakeVault, tmp_path: Path) -> None:
    server = start_meshca(tmp_path / "data", *_vault_args(vault, _token(vault, tmp_path)))
    try:
        chain = issue(server)
        locations = _key_locations(server)
        root_location = locations["root1"]
        assert root_location.startswith("vault-transit:")
        assert locations["intermediate2"].startswith("file:")  # issuance survives a Vault outage
        name = root_location.split("/keys/")[1].split("#")[0]
        private = vault.private_key("transit", name)
        # The root certificate's key is the Transit key, and it signed the intermediate.
        assert bundle_roots(server)[0].public_key() == private.public_key()
        chain[1].verify_directly_issued_by(bundle_roots(server)[0])

        # Not in the data dir (database included), the key-encryption key's file, or the log.
        encodings = [private.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
                     for fmt in (serialization.PrivateFormat.PKCS8,
                                 serialization.PrivateFormat.TraditionalOpenSSL)]
        number = private.private_numbers().private_value
        encodings.append(number.to_bytes((number.bit_length() + 7) // 8, "big"))
        encodings += [e.hex().encode() for e in encodings]
        files = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
        files += [tmp_path / "data.log", tmp_path / "data.kek"]
        for path in files:
            content = path.read_bytes()
            assert not any(e in content for e in encodings), path
            assert b"BEGIN PRIVATE KEY" not in content and b"BEGIN EC PRIVATE KEY" not in content, path

        # A root rotation goes through Vault too: a new Transit key signs the new intermediate.
        api(server, "POST", "/v1/ca:prepare", {"kind": "root"}, expect=201)
        api(server, "POST", "/v1/ca:activate", {"kind": "root", "waive_publish_lead": True})
        eventually(lambda: issue(server)[1].issuer != chain[1].issuer, what="the new root's chain")
        assert sum(1 for loc in _key_locations(server).values()
                   if loc.startswith("vault-transit:")) == 2
    finally:
        server.stop()


def test_vault_lost_while_running_issuance_goes_on_and_rotation_waits(
        vault: FakeVault, tmp_path: Path) -> None:
    server = start_meshca(tmp_path / "data", *_vault_args(vault, _token(vault, tmp_path)))
    try:
        issue(server)
        vault.stop()
        for _ in range(5):
            issue(server)  # the intermediate's key is local: no Vault call to issue
        assert AdminClient(server).get("/readyz").status == 200
        refused = AdminClient(server).post("/v1/ca:prepare", {"kind": "root"},
                                           token=(server.data_dir / "admin-token").read_text().strip())
        assert refused.status == 503 and "Vault" in refused.json()["detail"]
        assert refused.headers.get("retry-after") == "5"
        scraped = metrics(server)
        assert ("meshca_vault_alert", frozenset()) in scraped
        assert "hvs." not in server.log_text()  # no token in any message
    finally:
        server.stop()


def test_with_vault_unreachable_at_first_start_meshca_waits_then_serves(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fake = FakeVault()
    token_file = _token(fake, tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    log = (tmp_path / "data.log").open("ab")
    # The CA certificate the fake will present does not exist yet: start meshca with an address
    # where nothing listens, then bring Vault up there.
    fake_ca = tmp_path / "vault-ca.pem"
    args = [sys.executable, "-m", "meshca", "serve", "--data-dir", str(data),
            "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0",
            "--admin-addr", "127.0.0.1:0", "--ext-authz-addr", "off",
            "--keystore", "vault-transit", "--vault-addr", f"https://127.0.0.1:{port}",
            "--vault-ca-cert", str(fake_ca), "--vault-token-file", str(token_file)]
    # A CA that signed nothing Vault shows (an empty file is refused at start-up, as a
    # configuration error); replaced below, before meshca's first successful call.
    fake_ca.write_bytes(make_root(ec_key(n=77)).public_bytes(serialization.Encoding.PEM))
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(4)
        assert process.poll() is None, (tmp_path / "data.log").read_text()
        assert not (data / "endpoints.json").exists()  # not serving: no CA without its root
        fake.serve(port=port)
        fake_ca.write_bytes(fake.ca_cert.read_bytes())
        eventually(lambda: (data / "endpoints.json").exists(), timeout=60,
                   what="serving once Vault answers")
        assert "key service" in (tmp_path / "data.log").read_text()
        endpoints = json.loads((data / "endpoints.json").read_text())
        server = MeshcaProcess(data, process, endpoints["grpc"], endpoints["metrics"],
                               f"sqlite:///{data / 'meshca.db'}", tmp_path / "data.log",
                               admin_addr=endpoints["admin"])
        issue(server)
    finally:
        process.terminate()
        process.wait(15)
        fake.stop()
