"""The agent's side of the meshca server, against a real `meshca serve`: GrpcSigner's
CreateCertificate with the agent's token and ImpersonatedIdentity, HttpBundleSource's
/v1/bundle, and the SVID cache riding out a server that is stopped for longer than a
renewal period and started again on the same port."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from meshca.agent.bundles import FileBundleSource, HttpBundleSource
from meshca.agent.keys import make_key
from meshca.agent.metrics import AgentMetrics
from meshca.agent.ports import Identity
from meshca.agent.server_signer import GrpcSigner
from meshca.agent.svid_cache import SvidCache
from meshca.core import templates
from meshca.core.spiffe import SpiffeId
from meshca.errors import PermissionDenied, Unavailable
from meshca.gen.istio.v1.auth import ca_pb2, ca_pb2_grpc
from tests.fakes.agent_server import FakeSigner, fake_authority
from tests.support import MeshcaProcess, start_meshca

AGENT = ("kube-system", "meshca-agent")
TD = "cluster.local"
WEB = SpiffeId.for_service_account(TD, "default", "web")


def run(scenario: Callable[[], Coroutine[Any, Any, None]], timeout: float = 60) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout))


def write_secret(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    os.chmod(path, 0o600)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshcaProcess]:
    process = start_meshca(tmp_path_factory.mktemp("signer") / "data",
                           "--trusted-node-account", "/".join(AGENT))
    yield process
    process.stop()


@pytest.fixture
def files(server: MeshcaProcess, tmp_path: Path) -> tuple[Path, Path]:
    """(token file, server CA file) for the agent."""
    token = write_secret(tmp_path / "token", server.token(*AGENT))
    ca = tmp_path / "root-cert.pem"
    ca.write_bytes(server.bundle_pem)
    return token, ca


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample(metrics: AgentMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def signer_for(server: MeshcaProcess, token: Path, ca: Path,
               metrics: AgentMetrics | None = None) -> GrpcSigner:
    return GrpcSigner(server.grpc_addr, server_ca=ca, server_name="localhost", token_file=token,
                      timeout=timedelta(seconds=10), metrics=metrics)


def roots_of(server: MeshcaProcess) -> tuple[x509.Certificate, ...]:
    return tuple(x509.load_pem_x509_certificates(server.bundle_pem))


def test_signs_for_the_impersonated_workload(server: MeshcaProcess,
                                             files: tuple[Path, Path]) -> None:
    async def scenario() -> None:
        signer = signer_for(server, *files)
        key = make_key("ec-p256", WEB)
        chain = await signer.sign(WEB, key.csr_pem, timedelta(minutes=5))
        await signer.close()
        leaf = chain[0]
        uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert uris.get_values_for_type(x509.UniformResourceIdentifier) == [WEB.uri]
        assert leaf.public_key() == key.public_key
        # Leaf, intermediate(s), then the one root of the server's bundle that issued them.
        assert chain[-1] in roots_of(server)
        for cert, issuer in itertools.pairwise(chain):
            cert.verify_directly_issued_by(issuer)
        life = leaf.not_valid_after_utc - datetime.now(UTC)
        assert timedelta(minutes=4) < life <= timedelta(minutes=5)

    run(scenario)


def test_the_token_file_is_read_on_every_call(server: MeshcaProcess,
                                              files: tuple[Path, Path]) -> None:
    token, ca = files

    async def scenario() -> None:
        metrics = AgentMetrics()
        signer = signer_for(server, token, ca, metrics)
        await signer.sign(WEB, make_key("ec-p256", WEB).csr_pem)
        # A workload's own token is not a trusted node agent's: refused, not retried.
        untrusted = server.token("default", "web")
        write_secret(token, untrusted)
        with pytest.raises(PermissionDenied, match="UNAUTHENTICATED") as refused:
            await signer.sign(WEB, make_key("ec-p256", WEB).csr_pem)
        assert untrusted not in str(refused.value)
        assert metrics.registry.get_sample_value(
            "meshca_agent_server_errors_total", {"call": "sign", "code": "unauthenticated"}) == 1
        token.unlink()
        with pytest.raises(Unavailable, match="token file"):
            await signer.sign(WEB, make_key("ec-p256", WEB).csr_pem)
        write_secret(token, server.token(*AGENT))
        await signer.sign(WEB, make_key("ec-p256", WEB).csr_pem)
        assert signer.calls == 3  # the unreadable token never reached the server
        await signer.close()

    run(scenario)


def test_a_server_that_does_not_answer_is_unavailable(server: MeshcaProcess,
                                                      files: tuple[Path, Path],
                                                      unused_port: int) -> None:
    token, ca = files

    async def scenario() -> None:
        metrics = AgentMetrics()
        signer = GrpcSigner(f"127.0.0.1:{unused_port}", server_ca=ca, server_name="localhost",
                            token_file=token, timeout=timedelta(seconds=5), metrics=metrics)
        with pytest.raises(Unavailable, match="UNAVAILABLE"):
            await signer.sign(WEB, make_key("ec-p256", WEB).csr_pem)
        assert metrics.registry.get_sample_value(
            "meshca_agent_server_errors_total", {"call": "sign", "code": "unavailable"}) == 1
        await signer.close()

    run(scenario)


def test_http_bundle_source_reads_the_servers_bundle(server: MeshcaProcess,
                                                     files: tuple[Path, Path]) -> None:
    _, ca = files

    async def scenario() -> None:
        source = HttpBundleSource(f"https://{server.admin_addr}/v1/bundle", ca,
                                  timedelta(seconds=10), trust_domain=TD,
                                  server_name="localhost")
        bundle = await source.fetch()
        assert bundle.trust_domain == TD
        assert bundle.roots == roots_of(server)
        assert bundle.refresh_hint is not None and bundle.refresh_hint > timedelta(0)
        assert isinstance(bundle.sequence, int)
        # A server certificate that does not verify under the CA file: no bundle.
        other = HttpBundleSource(f"https://{server.admin_addr}/v1/bundle", ca,
                                 timedelta(seconds=10), trust_domain=TD,
                                 server_name="not-the-server.example")
        with pytest.raises(Unavailable, match="cannot fetch"):
            await other.fetch()
        # The PEM file form holds the same roots.
        assert (await FileBundleSource(ca, TD).fetch()).roots == roots_of(server)

    run(scenario)


def test_cache_rides_out_a_stopped_server_and_resumes(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meshca.agent.svid_cache")
    data_dir = tmp_path / "data"
    first = start_meshca(data_dir, "--trusted-node-account", "/".join(AGENT))
    port = first.grpc_addr.rpartition(":")[2]
    token = write_secret(tmp_path / "token", first.token(*AGENT))
    ca = tmp_path / "root-cert.pem"
    ca.write_bytes(first.bundle_pem)
    servers = [first]

    async def scenario() -> None:
        metrics = AgentMetrics()
        signer = signer_for(first, token, ca, metrics)
        cache = SvidCache(signer, FileBundleSource(ca, TD), trust_domain=TD,
                          ttl=timedelta(seconds=8), retry_max=timedelta(seconds=2),
                          metrics=metrics)
        await cache.start()
        assert cache.ready()
        stream = cache.watch(Identity(WEB))
        state = await asyncio.wait_for(anext(stream), 20)
        before = state.svids[0].chain[0]
        assert state.bundles[TD] == roots_of(first)
        # Renewal is due at about 4 s; the server goes away now, for longer than that.
        await asyncio.to_thread(first.stop)
        deadline = time.monotonic() + 20
        while sample(metrics, "meshca_agent_svid_renewals_total", outcome="unavailable") < 2:
            assert time.monotonic() < deadline, "no renewal was attempted"
            await asyncio.sleep(0.1)
        # Still served from the cache while the server is down, and said so in the metrics.
        assert sample(metrics, "meshca_agent_server_errors_total", call="sign",
                      code="unavailable") >= 2
        if datetime.now(UTC) < before.not_valid_after_utc - timedelta(seconds=1):
            assert cache.cached()[WEB].chain[0] == before
            late = cache.watch(Identity(WEB))
            assert (await asyncio.wait_for(anext(late), 5)).svids[0].chain[0] == before
            await late.aclose()  # type: ignore[attr-defined]
        restarted = await asyncio.to_thread(
            start_meshca, data_dir, "--trusted-node-account", "/".join(AGENT),
            "--grpc-addr", f"127.0.0.1:{port}")
        servers.append(restarted)
        renewed = await asyncio.wait_for(anext(stream), 30)
        after = renewed.svids[0].chain[0]
        assert after.serial_number != before.serial_number
        assert after.not_valid_after_utc > datetime.now(UTC)
        assert renewed.bundles[TD] == roots_of(restarted)  # the same CA: the data dir is kept
        assert sample(metrics, "meshca_agent_svid_renewals_total", outcome="ok") >= 2
        await stream.aclose()  # type: ignore[attr-defined]
        await cache.stop()
        await signer.close()

    try:
        run(scenario, timeout=90)
    finally:
        for server in servers:
            server.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "meshca.agent.svid_cache"]
    assert any(m.startswith(f"server unavailable, serving cached SVID for {WEB} until ")
               for m in messages), messages
    assert any(m.startswith(f"meshca server answered again: SVID for {WEB}")
               for m in messages), messages


# ---- what goes on the wire, and every status code, against an in-process server -------------

class ScriptedCa(ca_pb2_grpc.IstioCertificateServiceServicer):
    """Records each request; answers with `chain`, or aborts with `code`, or stalls."""

    def __init__(self, chain: list[str]) -> None:
        self.chain = chain
        self.code: grpc.StatusCode | None = None
        self.stall = 0.0
        self.seen: list[tuple[Any, dict[str, str]]] = []

    async def CreateCertificate(self, request: Any,
                                context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        self.seen.append((request, {k: str(v) for k, v in context.invocation_metadata() or ()}))
        if self.stall:
            await asyncio.sleep(self.stall)
        if self.code is not None:
            await context.abort(self.code, f"scripted {self.code.name}")
        return ca_pb2.IstioCertificateResponse(cert_chain=self.chain)


def tls_for_localhost(tmp_path: Path) -> tuple[bytes, bytes, Path]:
    """(server chain PEM, server key PEM, CA file) from the fake CA."""
    authority = fake_authority(11)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = authority.sign(templates.server_tls(
        public_key=key.public_key(), dns_names=["localhost"], ip_addresses=[],
        spiffe_id=SpiffeId.parse("spiffe://cluster.local/ns/meshca/sa/meshca"),
        issuer=authority.certificate, serial=x509.random_serial_number(),
        not_before=now - timedelta(minutes=1), not_after=now + timedelta(hours=1)))
    chain = b"".join(c.public_bytes(Encoding.PEM) for c in (cert, authority.certificate))
    ca = tmp_path / "scripted-ca.pem"
    ca.write_bytes(authority.chain[0].public_bytes(Encoding.PEM))
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return chain, key_pem, ca


REFUSED = ["UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT", "FAILED_PRECONDITION"]
RETRIED = ["UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "UNKNOWN", "INTERNAL",
           "ABORTED"]


def test_wire_details_and_status_codes(tmp_path: Path) -> None:
    token = write_secret(tmp_path / "token", "agent-token-1\n")
    chain_pem, key_pem, ca = tls_for_localhost(tmp_path)
    signing = FakeSigner()

    async def scenario() -> None:
        key = make_key("ec-p256", WEB)
        good = await signing.sign(WEB, key.csr_pem)
        ca_answer = ScriptedCa([c.public_bytes(Encoding.PEM).decode() for c in good])
        grpc_server = grpc.aio.server()
        ca_pb2_grpc.add_IstioCertificateServiceServicer_to_server(ca_answer, grpc_server)
        port = grpc_server.add_secure_port(
            "127.0.0.1:0", grpc.ssl_server_credentials([(key_pem, chain_pem)]))
        await grpc_server.start()
        metrics = AgentMetrics()
        signer = GrpcSigner(f"127.0.0.1:{port}", server_ca=ca, server_name="localhost",
                            token_file=token, cluster_id="east",
                            timeout=timedelta(seconds=1), metrics=metrics)
        try:
            assert await signer.sign(WEB, key.csr_pem, timedelta(seconds=90)) == good
            request, metadata = ca_answer.seen[-1]
            assert request.csr == key.csr_pem
            assert request.validity_duration == 90
            assert dict(request.metadata) == {"ImpersonatedIdentity": WEB.uri}
            assert metadata["authorization"] == "Bearer agent-token-1"
            assert metadata["clusterid"] == "east"
            write_secret(token, "agent-token-2")  # rotated by the kubelet
            await signer.sign(WEB, key.csr_pem)
            assert ca_answer.seen[-1][0].validity_duration == 0
            assert ca_answer.seen[-1][1]["authorization"] == "Bearer agent-token-2"
            # A chain for another key is not served.
            with pytest.raises(PermissionDenied, match="another key"):
                await signer.sign(WEB, make_key("ec-p256", WEB).csr_pem)
            for name in REFUSED + RETRIED:
                ca_answer.code = getattr(grpc.StatusCode, name)
                expected = PermissionDenied if name in REFUSED else Unavailable
                with pytest.raises(expected, match=name) as caught:
                    await signer.sign(WEB, key.csr_pem)
                assert "agent-token" not in str(caught.value)
                assert metrics.registry.get_sample_value(
                    "meshca_agent_server_errors_total",
                    {"call": "sign", "code": name.lower()}) == 1, name
            # A server slower than the deadline is one that cannot answer now.
            ca_answer.code, ca_answer.stall = None, 3.0
            with pytest.raises(Unavailable, match="DEADLINE_EXCEEDED"):
                await signer.sign(WEB, key.csr_pem)
            # The channel is dialled afresh and works again.
            ca_answer.stall = 0.0
            assert await signer.sign(WEB, key.csr_pem) == good
        finally:
            await signer.close()
            await grpc_server.stop(0)

    run(scenario)
