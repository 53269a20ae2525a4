"""`meshca agent` end to end: a real `meshca serve`, a real agent process, and unmodified SPIFFE
clients (PyPI `spiffe` and `spiffe-tls`) as the workloads.

The test process is one workload (uid 0, gid 0: `web`); children started with another gid are
others (`db`, or nobody the agent knows). The agent asks the server for every SVID with its own
token and ImpersonatedIdentity; nothing here hands it a certificate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from spiffe import TrustDomain, WorkloadApiClient, X509Source
from spiffe._proto import workload_pb2, workload_pb2_grpc
from spiffe.workloadapi.x509_context import X509Context
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
from tests.support import AdminClient, MeshcaProcess, admin_token, start_meshca

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="telling workloads apart by gid needs root")

TD = "cluster.local"
WEB = f"spiffe://{TD}/ns/default/sa/web"
DB = f"spiffe://{TD}/ns/data/sa/db"
DB_GID, STRANGER_GID = 2001, 4321
UNIX_ENTRIES = ("--attestor", "unix", "--workload", f"web=uid:0,gid:0={WEB}",
                "--workload", f"db=uid:0,gid:{DB_GID}={DB}")
T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float = 30.0, what: str = "it") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def client(agent: AgentProcess) -> WorkloadApiClient:
    return WorkloadApiClient(socket_path=agent.endpoint, default_timeout=20)


def roots_of(pem: bytes) -> set[bytes]:
    return {c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(pem)}


def workload(agent: AgentProcess, mode: str, gid: int) -> subprocess.Popen[str]:
    process: subprocess.Popen[str] = subprocess.Popen(
        [sys.executable, "-m", "tests.agent.spiffe_workload", mode], cwd=REPO,
        env=workload_env(agent), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        **run_as_gid(gid))  # type: ignore[call-overload]
    return process


def first_line(process: subprocess.Popen[str], timeout: float = 30.0) -> dict[str, Any]:
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()  # type: ignore[union-attr]
                                                          ), daemon=True)
    reader.start()
    reader.join(timeout)
    if not lines or not lines[0]:
        process.kill()
        raise AssertionError(f"workload said nothing: {process.stderr.read() if process.stderr else ''}")
    found: dict[str, Any] = json.loads(lines[0])
    return found


# ---- one server and one agent for the read-only tests ------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MeshcaProcess, AgentProcess]]:
    directory = public_dir()
    server = agent = None
    try:
        server = start_meshca(tmp_path_factory.mktemp("agent-e2e") / "data", *TRUSTED_AGENT)
        agent = start_agent(server, directory, *UNIX_ENTRIES)
        yield server, agent
    finally:
        cleanup(directory, agent, server)


def test_a_py_spiffe_client_fetches_its_svid_and_bundle(world: tuple[MeshcaProcess, AgentProcess]) -> None:
    server, agent = world
    issued_before = server.issued_count()
    with client(agent) as api:
        context = api.fetch_x509_context()
        again = api.fetch_x509_svid()
        bundles = api.fetch_x509_bundles()
    svid = context.default_svid
    assert str(svid.spiffe_id) == WEB
    leaf = svid.leaf
    assert leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) == \
        svid.private_key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    # One SVID per identity, cached: the second fetch is the same certificate.
    assert again.leaf.serial_number == leaf.serial_number
    assert server.issued_count() == issued_before + 1
    # The bundle is the server's trust bundle, and it verifies the chain it came with.
    bundle = bundles.get_bundle_for_trust_domain(TrustDomain(TD))
    assert bundle is not None
    served_roots = {c.public_bytes(Encoding.DER) for c in bundle.x509_authorities}
    assert served_roots == roots_of(server.bundle_pem)
    chain = svid.cert_chain
    assert chain[-1].issuer in {c.subject for c in bundle.x509_authorities}
    # The server recorded the impersonation by the agent's own account.
    audit = AdminClient(server).get("/v1/audit?limit=200", token=admin_token(server)).json()["items"]
    assert any(e["action"] == "CreateCertificate.impersonate" and e["target"] == WEB
               and e["actor"].endswith("/ns/kube-system/sa/meshca-agent") for e in audit)


def test_two_workloads_with_different_identities_complete_mutual_tls(
        world: tuple[MeshcaProcess, AgentProcess]) -> None:
    _, agent = world
    server_side = workload(agent, "serve", DB_GID)
    try:
        hello = first_line(server_side)
        assert hello["me"] == DB
        source = X509Source(workload_api_client=client(agent), timeout_in_seconds=20)
        try:
            seen: list[str] = []

            def authorize(peer: Any) -> bool:
                names = peer.to_cryptography().extensions.get_extension_for_class(
                    x509.SubjectAlternativeName).value
                seen.append(str(names.get_values_for_type(x509.UniformResourceIdentifier)[0]))
                return seen[-1] == DB

            # The client always presents its SVID (the server's MTLS mode demands it); TLS is the
            # client's mode that verifies the server against the SPIFFE bundle, not the system's.
            connection = dial(f"127.0.0.1:{hello['port']}", source, ClientTlsMode.TLS, authorize)
            try:
                answer = json.loads(connection.recv(4096).decode().splitlines()[0])
            finally:
                connection.close()
        finally:
            source.close()
        assert answer == {"me": DB}
        assert seen == [DB]
        assert first_line(server_side) == {"me": DB, "peer": WEB}
    finally:
        server_side.kill()
        server_side.wait(5)


def test_a_caller_the_agent_cannot_attest_is_permission_denied(
        world: tuple[MeshcaProcess, AgentProcess]) -> None:
    _, agent = world
    before = agent.metric("meshca_agent_attestations_total", attestor="unix", outcome="no_identity")
    stranger = workload(agent, "fetch", STRANGER_GID)
    said = first_line(stranger)
    stranger.wait(10)
    assert "error" in said and "PERMISSION_DENIED" in said["error"].upper().replace(" ", "_"), said
    assert agent.metric("meshca_agent_attestations_total", attestor="unix",
                        outcome="no_identity") == before + 1


def test_a_call_without_the_security_header_is_invalid_argument(
        world: tuple[MeshcaProcess, AgentProcess]) -> None:
    _, agent = world
    with grpc.insecure_channel(f"unix:{agent.socket}") as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), timeout=10)))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as jwt:
            stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=["a"]), timeout=10)
        assert jwt.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_health_readiness_and_metrics(world: tuple[MeshcaProcess, AgentProcess]) -> None:
    _, agent = world
    with client(agent) as api:
        api.fetch_x509_svid()
    assert agent.get("/healthz") == (200, "ok\n")
    assert agent.get("/readyz") == (200, "ok\n")
    assert agent.get("/nope")[0] == 404
    assert agent.metric("meshca_agent_svids_served_total", api="workload_x509_svid") >= 1
    assert agent.metric("meshca_agent_svid_renewals_total", outcome="ok") >= 1
    assert agent.metric("meshca_agent_svids_cached") >= 1
    expiry = agent.metric("meshca_agent_svid_soonest_expiry_seconds")
    assert 3600 < expiry <= 24 * 3600 + 120  # the server's default 24 h leaf
    # The process families stock dashboards read: this agent's own, not zero.
    assert agent.metric("process_resident_memory_bytes") > 10 * 2**20
    assert agent.metric("python_gc_collections_total", generation="0") >= 0
    assert os.stat(agent.socket).st_mode & 0o777 == 0o666
    assert os.stat(agent.directory).st_mode & 0o777 == 0o755


def test_the_sds_socket_serves_envoy_the_same_identity(world: tuple[MeshcaProcess, AgentProcess]) -> None:
    from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
    from envoy.service.discovery.v3 import discovery_pb2
    from envoy.service.secret.v3 import sds_pb2_grpc

    _, agent = world
    with grpc.insecure_channel(f"unix:{agent.sds_socket}") as channel:
        stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)
        answer = stub.FetchSecrets(discovery_pb2.DiscoveryRequest(
            resource_names=["default", "ROOTCA"],
            type_url="type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"),
            timeout=20)
    secrets = {}
    for resource in answer.resources:
        secret = secret_pb2.Secret()
        resource.Unpack(secret)
        secrets[secret.name] = secret
    assert set(secrets) == {"default", "ROOTCA"}
    chain = secrets["default"].tls_certificate.certificate_chain.inline_bytes
    leaf = x509.load_pem_x509_certificates(chain)[0]
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(u) for u in uris.get_values_for_type(x509.UniformResourceIdentifier)] == [WEB]
    assert roots_of(secrets["ROOTCA"].validation_context.trusted_ca.inline_bytes) == \
        roots_of(world[0].bundle_pem)


def test_a_jwt_svid_from_the_agent_validates_with_py_spiffe_and_with_pyjwt_on_the_bundle(
        world: tuple[MeshcaProcess, AgentProcess]) -> None:
    import jwt as pyjwt

    server, agent = world
    audience = "spiffe://cluster.local/ns/shop/sa/cart"
    with client(agent) as api:
        svid = api.fetch_jwt_svid(audience={audience})
        assert str(svid.spiffe_id) == WEB
        checked = api.validate_jwt_svid(svid.token, audience)
        assert str(checked.spiffe_id) == WEB
        jwt_bundles = api.fetch_jwt_bundles()
        with pytest.raises(Exception, match=r"(?i)audience"):
            api.validate_jwt_svid(svid.token, "spiffe://cluster.local/ns/other/sa/x")
    assert jwt_bundles.get_bundle_for_trust_domain(TrustDomain(TD)) is not None
    # An independent validator with nothing but the keys of the server's public bundle.
    document = AdminClient(server).get("/v1/bundle").json()
    header = pyjwt.get_unverified_header(svid.token)
    assert header["typ"] == "JWT" and header["alg"] != "none"
    jwk = next(k for k in document["keys"] if k.get("use") == "jwt-svid" and k["kid"] == header["kid"])
    claims = pyjwt.decode(svid.token, pyjwt.PyJWK(jwk, algorithm=header["alg"]).key,
                          algorithms=[header["alg"]], audience=audience)
    assert claims["sub"] == WEB
    assert 0 < claims["exp"] - claims["iat"] <= 3600


# ---- rotation, outages and restarts: a server and agent each -----------------------------------

SHORT = ("--svid-ttl", "12s", "--retry-max", "1s")


def _leaf_serial(context: X509Context) -> int:
    return int(context.default_svid.leaf.serial_number)


def test_an_open_stream_receives_the_renewed_svid_and_the_new_root_without_reconnecting(
        tmp_path: Path) -> None:
    directory = public_dir()
    server = agent = None
    try:
        server = start_meshca(tmp_path / "data", *TRUSTED_AGENT, "--backdate", "1s",
                              "--bundle-refresh-hint", "1s", "--ca-reload-interval", "0.5s")
        agent = start_agent(server, directory, *UNIX_ENTRIES, *SHORT,
                            "--bundle-url", f"https://{server.admin_addr}/v1/bundle")
        contexts: list[X509Context] = []
        errors: list[Exception] = []
        api = client(agent)
        handle = api.stream_x509_contexts(contexts.append, errors.append, retry_connect=False)
        try:
            first = eventually(lambda: contexts[:1], what="the first X.509 context")[0]
            assert str(first.default_svid.spiffe_id) == WEB
            renewed = eventually(lambda: [c for c in contexts if _leaf_serial(c) != _leaf_serial(first)],
                                 timeout=30, what="a renewed SVID on the open stream")[0]
            assert renewed.default_svid.leaf.not_valid_after_utc > first.default_svid.leaf.not_valid_after_utc

            prepared = AdminClient(server).post("/v1/ca:prepare", {"kind": "root"},
                                                token=admin_token(server))
            assert prepared.status == 201, prepared.body

            def two_roots() -> list[X509Context]:
                return [c for c in contexts
                        if len(c.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(TD))
                               .x509_authorities) == 2]  # type: ignore[union-attr]

            with_new_root = eventually(two_roots, timeout=30, what="the new root on the open stream")[0]
            served = {c.public_bytes(Encoding.DER) for c in with_new_root.x509_bundle_set
                      .get_bundle_for_trust_domain(TrustDomain(TD)).x509_authorities}  # type: ignore[union-attr]
            assert served == roots_of(server.bundle_pem)
            assert not errors
            # One stream throughout: the agent attested this caller once.
            assert agent.metric("meshca_agent_attestations_total", attestor="unix", outcome="ok") == 1
        finally:
            handle.cancel()
            api.close()
    finally:
        cleanup(directory, agent, server)


def test_server_down_longer_than_a_renewal_period_keeps_the_cached_svid_then_renewal_resumes(
        tmp_path: Path) -> None:
    directory = public_dir()
    server = agent = None
    try:
        server = start_meshca(tmp_path / "data", *TRUSTED_AGENT, "--backdate", "1s")
        grpc_port = server.grpc_addr.rpartition(":")[2]
        agent = start_agent(server, directory, *UNIX_ENTRIES, "--svid-ttl", "16s", "--retry-max", "1s")
        with client(agent) as api:
            before = api.fetch_x509_svid()
        server.stop()
        time.sleep(10)  # past the renewal at about half of 16 s
        with client(agent) as api:
            during = api.fetch_x509_svid()
        assert during.leaf.serial_number == before.leaf.serial_number  # still valid, still served
        assert agent.metric("meshca_agent_svid_renewals_total", outcome="unavailable") >= 1
        assert "unavailable" in agent.log_text().lower()

        server = start_meshca(server.data_dir, *TRUSTED_AGENT, "--backdate", "1s",
                              "--grpc-addr", f"127.0.0.1:{grpc_port}")

        def renewed() -> x509.Certificate | None:
            with client(agent) as api:
                leaf = api.fetch_x509_svid().leaf
            return leaf if leaf.serial_number != before.leaf.serial_number else None

        eventually(renewed, timeout=30, what="renewal after the server came back")
    finally:
        cleanup(directory, agent, server)


def test_a_restarted_agent_serves_again_within_seconds(tmp_path: Path) -> None:
    directory = public_dir()
    server = agent = None
    try:
        server = start_meshca(tmp_path / "data", *TRUSTED_AGENT)
        agent = start_agent(server, directory, *UNIX_ENTRIES)
        with client(agent) as api:
            assert str(api.fetch_x509_svid().spiffe_id) == WEB
        agent.stop()
        started = time.monotonic()
        agent = start_agent(server, directory, *UNIX_ENTRIES)
        with client(agent) as api:
            assert str(api.fetch_x509_svid().spiffe_id) == WEB
        assert time.monotonic() - started < 20
    finally:
        cleanup(directory, agent, server)
