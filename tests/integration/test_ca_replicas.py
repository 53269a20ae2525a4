"""The CA lifecycle across processes: two replicas on PostgreSQL, kill -9 in the middle of
rotations, a plugged-in CA directory, and the root-cert ConfigMaps in Kubernetes."""

from __future__ import annotations

import base64
import os
import random
import secrets
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from meshca.core import templates
from meshca.core.spiffe import SpiffeId
from meshca.infra.db.engine import open_engine
from meshca.infra.db.schema import ca_generations, issued_certificates
from meshca.infra.keyfiles import FileKeyStore, KeyEncryptionKey
from tests.fakes.kube_api import FakeKubeApi
from tests.integration.test_ca_rotation import FAST, RELOAD, api, bundle_roots, eventually, issue, metrics
from tests.support import AdminClient, MeshcaProcess, reset_postgres, start_meshca


def _kek() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _events(server: MeshcaProcess, event: str, kind: str) -> float:
    return sum(value for (name, labels), value in metrics(server).items()
               if name == "meshca_ca_rotation_events_total"
               and dict(labels).get("event") == event and dict(labels).get("kind") == kind)


@pytest.mark.postgres
def test_two_replicas_one_rotates_the_other_serves_the_new_bundle(
        tmp_path: Path, pg_url: str) -> None:
    reset_postgres(pg_url)
    shared = {"MESHCA_KEK": _kek()}
    keys = ("--key-dir", str(tmp_path / "shared-keys"))
    a = start_meshca(tmp_path / "a", *FAST, *keys, database_url=pg_url, env=shared)
    b = start_meshca(tmp_path / "b", *FAST, *keys, database_url=pg_url, env=shared)
    # One database, one set of admin tokens: the first replica's token is good on both.
    (b.data_dir / "admin-token").write_bytes((a.data_dir / "admin-token").read_bytes())
    try:
        # Both serve the same CA from the start.
        assert issue(a)[1].serial_number == issue(b)[1].serial_number

        # An operator prepares a root through A; B publishes it after its reload.
        prepared = api(a, "POST", "/v1/ca:prepare", {"kind": "root"}, expect=201)
        eventually(lambda: len(bundle_roots(b)) == 2, what="B serving the root A prepared")
        b_json = AdminClient(b).get("/v1/bundle").json()
        assert b_json["spiffe_sequence"] == AdminClient(a).get("/v1/bundle").json()["spiffe_sequence"]
        assert prepared["actions"][0]["generation_id"] in {
            g["id"] for g in api(b, "GET", "/v1/ca")["generations"] if g["in_bundle"]}

        # Automatic intermediate rotation (24 s lifetimes: the successor takes over at 20 s),
        # each step applied by one replica: polled, not slept through.
        engine = open_engine(pg_url)

        def intermediate_states() -> list[str]:
            with engine.connect() as connection:
                rows = connection.execute(select(ca_generations.c.kind, ca_generations.c.state)
                                          .order_by(ca_generations.c.id)).all()
            return [state for kind, state in rows if kind == "intermediate"]

        def activations() -> float:
            return _events(a, "activate", "intermediate") + _events(b, "activate", "intermediate")

        try:
            eventually(lambda: intermediate_states()[:2] == ["retired", "active"]
                       and activations() == 1, timeout=40, what="the intermediate rotated")
            intermediates = intermediate_states()
        finally:
            engine.dispose()
        assert intermediates[:2] == ["retired", "active"] and len(intermediates) in (2, 3)
        prepares = _events(a, "prepare", "intermediate") + _events(b, "prepare", "intermediate")
        assert prepares == len(intermediates) - 1  # the first one came from the bootstrap
        assert activations() == 1
        # Both replicas sign with the new intermediate (each within its reload interval) and
        # verify against the shared bundle.
        eventually(lambda: "g2" in issue(a)[1].subject.rfc4514_string()
                   and "g2" in issue(b)[1].subject.rfc4514_string(),
                   what="both replicas signing with the new intermediate")
        assert issue(a)[1].serial_number == issue(b)[1].serial_number
    finally:
        a.stop()
        b.stop()


def test_kill_between_rotation_steps_loses_no_key_and_signs_only_under_published_roots(
        tmp_path: Path) -> None:
    """SIGKILL at random moments of start-up (four journal steps) and of running rotations,
    eight times; every restart resumes, and the record stays consistent."""
    data = tmp_path / "data"
    fast = ("--root-ttl", "4m", "--intermediate-ttl", "6s", "--max-ttl", "1s", "--default-ttl", "1s",
            "--bundle-publish-lead", "2s", "--bundle-refresh-hint", "1s", "--rotation-skew", "1s",
            # one identity issues as fast as it can: the rate limit is not what this tests
            "--issuance-rate-per-identity", "off", *RELOAD)
    rng = random.Random(20261126)
    for _ in range(8):
        server = start_meshca(data, *fast)
        deadline = time.monotonic() + rng.uniform(0.0, 3.0)
        while time.monotonic() < deadline:
            try:
                issue(server)
            except grpc.RpcError as exc:  # a moment with no signer during a switch is allowed
                assert exc.code() is grpc.StatusCode.UNAVAILABLE, exc
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        for child in _children_of(server.process.pid):
            os.kill(child, signal.SIGKILL)
    server = start_meshca(data, *fast)
    try:
        issue(server)
        _check_journal(server, data)
    finally:
        server.stop()


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _check_journal(server: MeshcaProcess, data: Path) -> None:
    kek = KeyEncryptionKey.load_or_create(data.parent / f"{data.name}.kek", data)
    keys = FileKeyStore(data, kek)
    engine = open_engine(server.database_url)
    try:
        with engine.connect() as connection:
            gens = {r.id: r for r in connection.execute(select(ca_generations))}
            leaves = list(connection.execute(select(
                issued_certificates.c.issuer_generation_id, issued_certificates.c.issued_at,
                issued_certificates.c.certificate_pem)))
    finally:
        engine.dispose()
    assert sum(1 for g in gens.values() if g.kind == "root" and g.state == "active") == 1
    assert sum(1 for g in gens.values() if g.kind == "intermediate" and g.state == "active") == 1
    assert sum(1 for g in gens.values() if g.kind == "jwt" and g.state == "active") == 1
    for g in gens.values():
        key = keys.load(g.key_location)  # no key lost: every generation's key opens
        if g.kind == "jwt":  # a JWT-SVID key: its row holds the public key, not a certificate
            assert key.public_key() == serialization.load_pem_public_key(g.certificate_pem.encode())
            continue
        cert = x509.load_pem_x509_certificate(g.certificate_pem.encode())
        assert key.public_key() == cert.public_key()
        if g.parent_id is not None:
            cert.verify_directly_issued_by(
                x509.load_pem_x509_certificate(gens[g.parent_id].certificate_pem.encode()))
    assert leaves, "no certificate was issued across the restarts"
    for issuer_id, issued_at, pem in leaves:
        issuer = gens[issuer_id]
        root = gens[issuer.parent_id]
        leaf = x509.load_pem_x509_certificate(pem.encode())
        leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(issuer.certificate_pem.encode()))
        # Signed only under a root that was already in the published bundle, and still in it.
        assert root.created_at <= issued_at
        assert root.pruned_at is None or root.pruned_at > issued_at


# ---- a plugged-in CA ----------------------------------------------------------------------

def _write_cacerts(directory: Path, root: x509.Certificate, root_key: ec.EllipticCurvePrivateKey,
                   serial: int) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = templates.ca_certificate(
        public_key=key.public_key(), subject=templates.ca_subject("ops", "intermediate", serial, serial),
        trust_domain=SpiffeId.for_trust_domain("cluster.local"), issuer=root, serial=serial,
        not_before=now - timedelta(hours=1), not_after=now + timedelta(days=30), path_length=0,
    ).sign(root_key, _sha256())
    pem = serialization.Encoding.PEM
    directory.mkdir(exist_ok=True)
    staging = {
        "ca-key.pem": key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()),
        "ca-cert.pem": cert.public_bytes(pem),
        "root-cert.pem": root.public_bytes(pem),
        "cert-chain.pem": cert.public_bytes(pem) + root.public_bytes(pem),
    }
    for name, content in staging.items():
        (directory / f".{name}").write_bytes(content)
        os.replace(directory / f".{name}", directory / name)
    return cert


def _sha256() -> hashes.SHA256:
    return hashes.SHA256()


def _root() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = templates.ca_certificate(
        public_key=key.public_key(), subject=templates.ca_subject("ops", "root", 1, 77),
        trust_domain=SpiffeId.for_trust_domain("cluster.local"), issuer=None, serial=77,
        not_before=now - timedelta(hours=1), not_after=now + timedelta(days=365), path_length=1,
    ).sign(key, _sha256())
    return cert, key


def test_plugged_in_ca_signs_reloads_and_is_never_rotated_by_meshca(tmp_path: Path) -> None:
    root, root_key = _root()
    cacerts = tmp_path / "cacerts"
    first = _write_cacerts(cacerts, root, root_key, 1001)
    server = start_meshca(tmp_path / "data", "--ca-dir", str(cacerts), *RELOAD)
    try:
        chain = issue(server)
        assert chain[1] == first and chain[1].issuer == root.subject
        assert [r.subject for r in bundle_roots(server)] == [root.subject]
        status = api(server, "GET", "/v1/ca")
        assert status["mode"] == "plugged" and status["rotation"]["automatic"] is False
        assert "rotates nothing" in status["rotation"]["note"]
        assert status["plugged"]["directory"] == str(cacerts)
        refused = AdminClient(server).post("/v1/ca:prepare", {"kind": "root"},
                                           token=(server.data_dir / "admin-token").read_text().strip())
        assert refused.status == 409 and "plugged in" in refused.json()["detail"]

        # The operator replaces the files: meshca signs with the new intermediate.
        second = _write_cacerts(cacerts, root, root_key, 1002)
        eventually(lambda: issue(server)[1] == second, what="the new plugged-in intermediate")
        # A broken set (key of another certificate) is refused; the loaded CA stays.
        (cacerts / "ca-key.pem").write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        eventually(lambda: api(server, "GET", "/v1/ca")["plugged"]["last_error"],
                   what="the broken files reported")
        assert issue(server)[1] == second
    finally:
        server.stop()


def test_an_incomplete_plugged_in_ca_stops_start_up_with_one_clear_line(tmp_path: Path) -> None:
    root, root_key = _root()
    cacerts = tmp_path / "cacerts"
    _write_cacerts(cacerts, root, root_key, 1001)
    (cacerts / "cert-chain.pem").unlink()
    with pytest.raises(RuntimeError) as failed:
        start_meshca(tmp_path / "data", "--ca-dir", str(cacerts))
    message = str(failed.value)
    assert "meshca: cannot start: --ca-dir" in message and "cert-chain.pem" in message
    assert "Traceback" not in message


# ---- root-cert ConfigMaps -----------------------------------------------------------------

def test_the_bundle_is_published_to_configmaps_and_follows_a_new_root(tmp_path: Path) -> None:
    with FakeKubeApi() as kube:
        kube.add_namespace("shop", {"istio-injection": "enabled"})
        kube.add_namespace("pay", {"istio-injection": "enabled"})
        kube.add_namespace("tools", {"istio-injection": "disabled"})
        kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
        server = start_meshca(tmp_path / "data", "--kubeconfig", str(kubeconfig),
                              "--publish-configmaps", "istio-injection=enabled",
                              "--publish-interval", "1s", *RELOAD)
        try:
            def published() -> set[str]:
                found = set()
                for namespace in ("shop", "pay", "tools"):
                    cm = kube.configmap(namespace, "istio-ca-root-cert")
                    if cm and cm["data"]["root-cert.pem"] == server.bundle_pem.decode():
                        found.add(namespace)
                return found

            assert eventually(lambda: published() == {"shop", "pay"} and published())
            assert kube.configmap("tools", "istio-ca-root-cert") is None
            api(server, "POST", "/v1/ca:prepare", {"kind": "root"}, expect=201)
            eventually(lambda: server.bundle_pem.count(b"BEGIN CERTIFICATE") == 2)
            eventually(lambda: published() == {"shop", "pay"}, what="ConfigMaps with both roots")
            shop = kube.configmap("shop", "istio-ca-root-cert")
            assert shop is not None
            pem = shop["data"]["root-cert.pem"]
            assert pem.count("BEGIN CERTIFICATE") == 2
        finally:
            server.stop()
