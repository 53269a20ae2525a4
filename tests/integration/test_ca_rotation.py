"""CA rotation on the real server: operators' prepare/activate/taint, automatic rotation while
sidecars keep renewing, several processes reloading, and the CLI.

Everything goes through the outside: gRPC over TLS as a sidecar, HTTPS as an admin, the
`meshca ca` command, the metrics endpoint and the files in the data dir.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client.parser import text_string_to_metric_families

from tests.support import AdminClient, MeshcaProcess, csr_pem, ec_key, start_meshca

T = TypeVar("T")
RELOAD = ("--ca-reload-interval", "0.5s")
# Fresh connections in a row that must all agree before a test trusts that every one of two
# workers has the state: the chance that they all land on the same worker is 2**-15.
EVERY_WORKER = 16
# Short lifetimes that satisfy every rotation threshold: an intermediate lives 24 s, so its
# successor is prepared at 12 s and takes over at 20 s; a leaf lives at most 4 s (1/6).
FAST = ("--root-ttl", "1h", "--intermediate-ttl", "24s", "--max-ttl", "4s", "--default-ttl", "4s",
        "--bundle-publish-lead", "1s", "--bundle-refresh-hint", "0.5s", "--rotation-skew", "1s",
        *RELOAD)


def eventually(check: Callable[[], T | None], timeout: float = 10.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what or check}")
        time.sleep(0.1)


def admin_token(server: MeshcaProcess) -> str:
    return (server.data_dir / "admin-token").read_text().strip()


def api(server: MeshcaProcess, method: str, path: str, body: Any = None,
        expect: int = 200) -> Any:
    response = AdminClient(server).request(method, path, token=admin_token(server), json_body=body)
    assert response.status == expect, response.body
    return response.json()


def bundle_roots(server: MeshcaProcess) -> list[x509.Certificate]:
    response = AdminClient(server).get("/v1/bundle", accept="application/x-pem-file")
    assert response.status == 200
    return x509.load_pem_x509_certificates(response.body)


def issue(server: MeshcaProcess, *, fresh_channel: bool = False, key: Any = None) -> list[x509.Certificate]:
    """A sidecar's CreateCertificate; a fresh channel makes a new TLS handshake."""
    channel = grpc.secure_channel(
        server.grpc_addr, grpc.ssl_channel_credentials(server.bundle_pem),
        options=[("grpc.ssl_target_name_override", "localhost")]) if fresh_channel else None
    try:
        chain = server.create_certificate(csr_pem(key), channel=channel)
    finally:
        if channel is not None:
            channel.close()
    certs = [x509.load_pem_x509_certificate(c.encode()) for c in chain[:-1]]
    roots = x509.load_pem_x509_certificates(chain[-1].encode())
    verify_chain(certs, roots)
    return certs


def verify_chain(certs: list[x509.Certificate], roots: list[x509.Certificate]) -> None:
    """leaf ← intermediate ← one of `roots`, by signature and name."""
    leaf, intermediate = certs[0], certs[1]
    leaf.verify_directly_issued_by(intermediate)
    anchors = [r for r in roots if r.subject == intermediate.issuer]
    assert anchors, "the chain's root is not in the bundle sent with it"
    intermediate.verify_directly_issued_by(anchors[0])


def metrics(server: MeshcaProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = urllib.request.urlopen(f"http://{server.metrics_addr}/metrics", timeout=10).read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def serving_issuer(server: MeshcaProcess) -> x509.Name:
    """The issuer of the certificate meshca's gRPC port presents in a new handshake."""
    host, _, port = server.grpc_addr.rpartition(":")
    context = ssl.create_default_context(cadata=server.bundle_pem.decode())
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).issuer


def generations(server: MeshcaProcess) -> dict[int, dict[str, Any]]:
    return {g["id"]: g for g in api(server, "GET", "/v1/ca")["generations"]}


def meshca_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshca", *args], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[MeshcaProcess]:
    # Two workers start two interpreters: on a loaded machine that alone can take a minute.
    server = start_meshca(tmp_path / "data", "--workers", "2", *RELOAD, timeout=180)
    yield server
    server.stop()


def test_operator_rotates_root_and_taints_an_intermediate_without_a_restart(
        two_workers: MeshcaProcess) -> None:
    server = two_workers
    first = issue(server)
    first_intermediate = first[1]
    status = api(server, "GET", "/v1/ca")
    assert status["mode"] == "meshca" and status["rotation"]["automatic"] is True
    sequence = status["bundle_sequence"]
    assert [r.subject for r in bundle_roots(server)] == [first_intermediate.issuer]

    # A new root is published at once and signs nothing yet.
    prepared = api(server, "POST", "/v1/ca:prepare", {"kind": "root"}, expect=201)
    new_root_id = prepared["actions"][0]["generation_id"]
    eventually(lambda: len(bundle_roots(server)) == 2, what="the new root in /v1/bundle")
    eventually(lambda: server.bundle_pem.count(b"BEGIN CERTIFICATE") == 2,
               what="the new root in <data-dir>/root-cert.pem")
    spiffe = AdminClient(server).get("/v1/bundle").json()
    assert spiffe["spiffe_sequence"] > sequence
    assert all(issue(server)[1].subject == first_intermediate.subject for _ in range(4))

    # Too early for the new root to sign: refused, and the refusal says until when.
    early = AdminClient(server).post("/v1/ca:activate", {"kind": "root"}, token=admin_token(server))
    assert early.status == 409 and "published only from" in early.json()["detail"]

    api(server, "POST", "/v1/ca:activate", {"kind": "root", "waive_publish_lead": True})
    new_root = next(r for r in bundle_roots(server)
                    if r.subject.rfc4514_string() == generations(server)[new_root_id]["subject"])

    # Fresh connections: each lands on a worker the kernel picks (SO_REUSEPORT), so that
    # enough of them in a row show every worker's state, not only the cached channel's.
    def under_new_root() -> bool:
        return all(issue(server, fresh_channel=True)[1].issuer == new_root.subject
                   for _ in range(EVERY_WORKER))

    eventually(under_new_root, what="every worker signing under the new root")
    assert len(bundle_roots(server)) == 2  # the old root stays: its leaves are still valid

    # Taint the signing intermediate: replaced at once; its certificates cannot renew with themselves.
    key = ec_key()
    victim_chain = issue(server, key=key)
    victim = next(g for g in generations(server).values() if g["signing"])
    assert victim_chain[1].serial_number == int(victim["serial"], 16)
    answer = api(server, "POST", f"/v1/ca/generations/{victim['id']}:taint", {"reason": "leaked"})
    assert {(a["action"], a["kind"]) for a in answer["actions"]} >= {
        ("prepare", "intermediate"), ("activate", "intermediate")}
    assert answer["generations"][[g["id"] for g in answer["generations"]].index(victim["id"])][
        "state"] == "tainted"
    eventually(lambda: all(issue(server, fresh_channel=True)[1].serial_number
                           != victim_chain[1].serial_number for _ in range(EVERY_WORKER)),
               timeout=30, what="no worker signing with the tainted key")
    # Every worker's TLS front rebuilt after the taint (a new serving certificate): only then
    # does the renewal below meet a worker whose view is the one this test asserts on. A
    # worker that lags (a loaded machine) would otherwise still be reloading, and a client
    # certificate it cannot yet place ends the handshake (the client sees "Socket closed").
    eventually(lambda: all(serving_issuer(server) != victim_chain[1].subject
                           for _ in range(EVERY_WORKER)),
               timeout=30, what="every worker serving with a certificate from the new intermediate")

    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in victim_chain)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    renewal = server.channel(client_chain=chain_pem, client_key=key_pem)
    with pytest.raises(grpc.RpcError) as refused:
        server.create_certificate(csr_pem(), metadata=[], channel=renewal)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED, (
        refused.value.details(), server.log_text()[-4000:])
    assert "compromised" in (refused.value.details() or "")

    audit = api(server, "GET", "/v1/audit?limit=1000")["items"]
    done = [(e["action"], e["outcome"]) for e in audit if e["action"].startswith("ca.")]
    assert done == [("ca.prepare", "ok"), ("ca.activate", "refused"), ("ca.activate", "ok"),
                    ("ca.taint", "ok")]
    assert all(e["actor"] == "token:bootstrap-admin" for e in audit if e["action"].startswith("ca."))

    scraped = metrics(server)
    assert scraped[("meshca_ca_rotation_events_total", frozenset(
        {"event": "prepare", "kind": "root", "reason": "manual"}.items()))] == 1
    assert scraped[("meshca_ca_rotation_events_total", frozenset(
        {"event": "activate", "kind": "intermediate", "reason": "tainted"}.items()))] == 1
    assert scraped[("meshca_ca_taints_total", frozenset({"kind": "intermediate"}.items()))] == 1
    final = api(server, "GET", "/v1/ca")
    assert scraped[("meshca_trust_bundle_sequence", frozenset())] == final["bundle_sequence"]
    expiries = {dict(labels)["generation"]: value for (name, labels), value in scraped.items()
                if name == "meshca_ca_generation_expiry_timestamp_seconds"}
    assert set(expiries) == {str(g["id"]) for g in final["generations"]}


def test_the_ca_command_shows_and_changes_the_lifecycle(two_workers: MeshcaProcess) -> None:
    server = two_workers
    data = ["--data-dir", str(server.data_dir)]
    shown = meshca_cli("ca", "status", "--json", *data)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["generations"] == api(server, "GET", "/v1/ca")["generations"]

    table = meshca_cli("ca", "status", *data)
    assert "rotated automatically" in table.stdout and "intermediate" in table.stdout

    prepared = meshca_cli("ca", "prepare", "intermediate", "--json", *data)
    assert prepared.returncode == 0, prepared.stderr
    new_id = json.loads(prepared.stdout)["actions"][0]["generation_id"]
    assert generations(server)[new_id]["state"] == "prepared"

    activated = meshca_cli("ca", "activate", "intermediate", *data)
    assert activated.returncode == 0, activated.stderr
    assert f"activate intermediate generation {new_id}" in activated.stdout
    eventually(lambda: all(issue(server)[1].serial_number == int(generations(server)[new_id]["serial"], 16)
                           for _ in range(4)), what="the activated intermediate signing")

    missing = meshca_cli("ca", "taint", "999", *data)
    assert missing.returncode == 1 and "404" in missing.stderr and "999" in missing.stderr
    bad = meshca_cli("ca", "taint", "first", *data)
    assert bad.returncode == 2 and "not a CA generation id" in bad.stderr

    # With --server and --token-file instead of the data dir, as from another machine.
    viewer = api(server, "POST", "/v1/admin-tokens", {"name": "ca-viewer", "role": "viewer"},
                 expect=201)["token"]
    token_file = server.data_dir.parent / "viewer-token"
    token_file.write_text(viewer)
    remote = ["--server", f"https://{server.admin_addr}", "--token-file", str(token_file),
              "--ca-file", str(server.data_dir / "root-cert.pem")]
    assert meshca_cli("ca", "status", "--json", *remote).returncode == 0
    refused = meshca_cli("ca", "prepare", "root", *remote)
    assert refused.returncode == 1 and "403" in refused.stderr
    assert sum(1 for g in generations(server).values() if g["kind"] == "root") == 1


def test_intermediates_rotate_by_themselves_while_sidecars_renew(tmp_path: Path) -> None:
    """Two intermediate lifetimes of 24 s: successors prepared at 12 s and activated at 20 s;
    a sidecar renewing all along (new TLS handshakes included) never sees a failure."""
    server = start_meshca(tmp_path / "data", "--workers", "2", *FAST)
    try:
        seen: list[int] = []
        failures: list[str] = []
        deadline = time.monotonic() + 30
        count = 0
        while time.monotonic() < deadline:
            try:
                chain = issue(server, fresh_channel=count % 3 == 0)
                seen.append(chain[1].serial_number)
            except (grpc.RpcError, AssertionError, ValueError) as exc:
                failures.append(repr(exc))
            count += 1
            time.sleep(0.2)
        assert failures == []
        distinct = list(dict.fromkeys(seen))
        assert len(distinct) >= 2, "no intermediate rotation happened in 30 s"
        status = api(server, "GET", "/v1/ca")
        intermediates = [g for g in status["generations"] if g["kind"] == "intermediate"]
        assert [g["state"] for g in intermediates][:2] == ["retired", "active"] or \
            [g["state"] for g in intermediates][:2] == ["retired", "retired"]
        scraped = metrics(server)
        assert scraped[("meshca_ca_rotation_events_total", frozenset(
            {"event": "activate", "kind": "intermediate", "reason": "scheduled"}.items()))] >= 1
        assert count > 50
    finally:
        server.stop()
