"""Federation end to end: two `meshca serve` (a.test, b.test) federating both ways (one
relationship per profile), each with its own `meshca agent`; a workload of each, on the
unmodified SPIFFE clients, completes mutual TLS with the other and sees its SPIFFE ID. Removing
the relationship makes the next handshake fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from spiffe import WorkloadApiClient, X509Source
from spiffetls import dial
from spiffetls.mode import ClientTlsMode

from tests.agent.agent_process import (
    REPO,
    TRUSTED_AGENT,
    AgentProcess,
    cleanup,
    public_dir,
    run_as_gid,
    start_agent,
    workload_env,
)
from tests.federation_support import issue, make_ca
from tests.support import AdminClient, MeshcaProcess, admin_token, start_meshca

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="telling workloads apart by gid needs root")

WEB = "spiffe://a.test/ns/default/sa/web"  # this process, through a.test's agent
DB = "spiffe://b.test/ns/data/sa/db"  # a child with gid 2001, through b.test's agent
DB_GID = 2001
FAST = ("--federation-refresh-min", "1s", "--federation-refresh-max", "2s",
        "--federation-fetch-timeout", "2s", "--ca-reload-interval", "1s",
        "--bundle-refresh-hint", "1s", *TRUSTED_AGENT)
T = TypeVar("T")


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def endpoint(server: MeshcaProcess) -> str:
    return str(json.loads((server.data_dir / "endpoints.json").read_text())["federation"])


@dataclass
class Domains:
    a: MeshcaProcess
    b: MeshcaProcess
    agent_a: AgentProcess
    agent_b: AgentProcess


@pytest.fixture()
def domains(tmp_path: Path) -> Iterator[Domains]:
    dir_a, dir_b = public_dir(), public_dir()
    a = b = agent_a = agent_b = None
    try:
        web_ca = make_ca("federation test web CA")
        cert, key = issue(web_ca, dns=("localhost",), ips=("127.0.0.1",))
        (tmp_path / "web.pem").write_text(cert)
        (tmp_path / "web.key").write_text(key)
        (tmp_path / "web.key").chmod(0o600)
        (tmp_path / "web-ca.pem").write_text(web_ca.pem)
        # b.test serves its bundle with a Web-PKI certificate; a.test trusts it by flag.
        b = start_meshca(tmp_path / "b", "--trust-domain", "b.test", "--federation-addr",
                         "127.0.0.1:0", "--federation-profile", "https_web",
                         "--federation-cert", str(tmp_path / "web.pem"),
                         "--federation-key", str(tmp_path / "web.key"), *FAST)
        a = start_meshca(tmp_path / "a", "--trust-domain", "a.test", "--federation-addr",
                         "127.0.0.1:0", "--federate-with",
                         f"b.test=https://{endpoint(b)}/,profile=https_web,ca={tmp_path / 'web-ca.pem'}",
                         *FAST)
        # b.test trusts a.test through the admin API, with a.test's own SVID (https_spiffe).
        created = AdminClient(b).post("/v1/federation", {
            "trust_domain": "a.test", "url": f"https://{endpoint(a)}/", "profile": "https_spiffe",
            "endpoint_spiffe_id": "spiffe://a.test/meshca/federation",
            "bootstrap_bundle": a.bundle_pem.decode()}, token=admin_token(b))
        assert created.status == 201, created.body
        agent_a = start_agent(a, dir_a, "--trust-domain", "a.test", "--attestor", "unix",
                              "--workload", f"web=uid:0,gid:0={WEB}")
        agent_b = start_agent(b, dir_b, "--trust-domain", "b.test", "--attestor", "unix",
                              "--workload", f"db=uid:0,gid:{DB_GID}={DB}")
        yield Domains(a, b, agent_a, agent_b)
    finally:
        cleanup(dir_b, agent_b, b)
        cleanup(dir_a, agent_a, a)


def trust_domains_seen_by_a(agent: AgentProcess) -> list[str]:
    with WorkloadApiClient(socket_path=agent.endpoint, default_timeout=20) as client:
        return sorted(str(b.trust_domain) for b in client.fetch_x509_bundles().bundles)


def trust_domains_seen_by_b(agent: AgentProcess) -> list[str]:
    done = subprocess.run([sys.executable, "-m", "tests.agent.spiffe_workload", "bundles"],
                          cwd=REPO, env=workload_env(agent), capture_output=True, text=True,
                          timeout=60, check=True, **run_as_gid(DB_GID))  # type: ignore[call-overload]
    found: list[str] = json.loads(done.stdout.splitlines()[0])["trust_domains"]
    return found


def peer_uri(peer: Any) -> str:
    names = peer.to_cryptography().extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    return str(names.get_values_for_type(x509.UniformResourceIdentifier)[0])


def handshake(agent: AgentProcess, port: int) -> tuple[str, dict[str, Any]]:
    """This workload (a.test) dials the b.test workload with its own X509Source."""
    source = X509Source(workload_api_client=WorkloadApiClient(socket_path=agent.endpoint),
                        timeout_in_seconds=20)
    seen: list[str] = []

    def authorize(peer: Any) -> bool:
        seen.append(peer_uri(peer))
        return True  # the bundle of the peer's trust domain has verified it

    try:
        connection = dial(f"127.0.0.1:{port}", source, ClientTlsMode.TLS, authorize)
        try:
            answer: dict[str, Any] = json.loads(connection.recv(4096).decode().splitlines()[0])
        finally:
            connection.close()
    finally:
        source.close()
    return seen[0], answer


def serve_db(agent: AgentProcess) -> subprocess.Popen[str]:
    """The b.test workload: an mTLS server on spiffe-tls, its SVID from b.test's agent."""
    process: subprocess.Popen[str] = subprocess.Popen(
        [sys.executable, "-m", "tests.agent.spiffe_workload", "serve"], cwd=REPO,
        env=workload_env(agent), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        **run_as_gid(DB_GID))  # type: ignore[call-overload]
    return process


def test_workloads_of_two_federated_trust_domains_complete_mutual_tls(domains: Domains) -> None:
    eventually(lambda: trust_domains_seen_by_a(domains.agent_a) == ["a.test", "b.test"],
               "a.test's workloads to get b.test's bundle")
    eventually(lambda: trust_domains_seen_by_b(domains.agent_b) == ["a.test", "b.test"],
               "b.test's workloads to get a.test's bundle")
    server = serve_db(domains.agent_b)
    try:
        hello = json.loads(server.stdout.readline())  # type: ignore[union-attr]
        assert hello["me"] == DB
        seen, answer = handshake(domains.agent_a, hello["port"])
        assert seen == DB and answer == {"me": DB}
        assert json.loads(server.stdout.readline()) == {"me": DB, "peer": WEB}  # type: ignore[union-attr]

        # b.test stops trusting a.test: its workloads lose a.test's bundle, and the next
        # handshake from a.test fails on b.test's side. (spiffe-tls adds roots to a listening
        # context on updates but never removes one, so the b.test workload listens afresh.)
        removed = AdminClient(domains.b).request("DELETE", "/v1/federation/a.test",
                                                 token=admin_token(domains.b))
        assert removed.status in (200, 204), removed.body
        eventually(lambda: trust_domains_seen_by_b(domains.agent_b) == ["b.test"],
                   "b.test's workloads to drop a.test's bundle")
        server.kill()
        server.wait(5)
        server = serve_db(domains.agent_b)
        hello = json.loads(server.stdout.readline())  # type: ignore[union-attr]
        with pytest.raises(Exception):  # noqa: B017 - the TLS stack's own error, whichever it is
            handshake(domains.agent_a, hello["port"])
        refused = json.loads(server.stdout.readline())  # type: ignore[union-attr]
        assert "error" in refused and "peer" not in refused, refused
    finally:
        server.kill()
        server.wait(5)
