"""Envoy SDS on the agent's second socket, as an SDS client built on `xds-protos` sees it.

The server (SdsServer over in-memory fake ports) and the client (a grpc.aio channel to the
Unix socket) share one event loop per test; the client is this process, so the kernel reports
its pid, uid and gid to the agent. `tests/agent/sds_probe.py` calls from other processes (one
of them as `nobody`) to show each connection is attested from its own credentials.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)
from cryptography.x509.verification import PolicyBuilder, Store
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.rpc import status_pb2

from meshca.agent.metrics import AgentMetrics
from meshca.agent.ports import PeerCredentials
from meshca.agent.sds import SdsServer
from meshca.agent.sds_secrets import SECRET_TYPE
from meshca.core.spiffe import SpiffeId
from tests.fakes.agent_workloads import OTHER, FakeWorkloadIdentities, FakeX509Svids
from tests.unit.pki import CALLER, TRUST_DOMAIN

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0
NODE = base_pb2.Node(id="sidecar~10.1.2.3~web-7d4f.default~default.svc.cluster.local")
BOTH = ("default", "ROOTCA")


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """Short (a Unix socket path has ~100 bytes) and open to `nobody` (the probe test)."""
    path = Path(tempfile.mkdtemp(prefix="sds-", dir="/tmp"))
    os.chmod(path, 0o755)  # noqa: S103
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class Agent:
    server: SdsServer
    identities: FakeWorkloadIdentities
    svids: FakeX509Svids
    metrics: AgentMetrics
    stub: Any

    def counted(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return value or 0.0

    def stream(self) -> SdsStream:
        return SdsStream(self.stub.StreamSecrets())


class SdsStream:
    """Envoy's side of one StreamSecrets stream."""

    def __init__(self, call: Any) -> None:
        self.call = call

    async def send(self, names: Sequence[str], *, version: str = "", nonce: str = "",
                   error: str | None = None) -> None:
        request = discovery_pb2.DiscoveryRequest(
            node=NODE, type_url=SECRET_TYPE, resource_names=list(names), version_info=version,
            response_nonce=nonce)
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self.call.write(request)

    async def receive(self) -> Any:
        response = await asyncio.wait_for(self.call.read(), TIMEOUT)
        assert response is not grpc.aio.EOF, "the stream ended"
        return response

    async def ack(self, response: Any, names: Sequence[str]) -> None:
        await self.send(names, version=response.version_info, nonce=response.nonce)

    async def nack(self, response: Any, kept: Any, names: Sequence[str], error: str) -> None:
        await self.send(names, version=kept.version_info, nonce=response.nonce, error=error)


@asynccontextmanager
async def serving(socket_dir: Path, identities: FakeWorkloadIdentities | None = None,
                  ) -> AsyncIterator[Agent]:
    identities = identities or FakeWorkloadIdentities()
    svids = FakeX509Svids()
    metrics = AgentMetrics()
    server = SdsServer(str(socket_dir / "run" / "sds.sock"), identities, svids, metrics=metrics)
    await server.start()
    channel = grpc.aio.insecure_channel(f"unix:{server.socket_path}")
    try:
        yield Agent(server, identities, svids, metrics,
                    sds_pb2_grpc.SecretDiscoveryServiceStub(channel))
    finally:
        await channel.close()
        await server.stop()


def run(socket_dir: Path, scenario: Callable[[Agent], Awaitable[None]],
        identities: FakeWorkloadIdentities | None = None) -> None:
    async def main() -> None:
        async with serving(socket_dir, identities) as agent:
            await asyncio.wait_for(scenario(agent), 4 * TIMEOUT)

    asyncio.run(main())


def secrets(response: Any) -> dict[str, Any]:
    found = {}
    for resource in response.resources:
        assert resource.type_url == SECRET_TYPE
        secret = secret_pb2.Secret()
        assert resource.Unpack(secret)
        found[secret.name] = secret
    return found


def chain_of(secret: Any) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(secret.tls_certificate.certificate_chain.inline_bytes)


def roots_of(secret: Any) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(secret.validation_context.trusted_ca.inline_bytes)


def spiffe_id_of(leaf: x509.Certificate) -> str:
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    (uri,) = san.get_values_for_type(x509.UniformResourceIdentifier)
    return str(uri)


def _spki(key: Any) -> bytes:
    return bytes(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))


async def eventually(condition: Callable[[], bool]) -> None:
    for _ in range(int(TIMEOUT / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


def test_default_and_rootca_are_served_as_envoy_expects(socket_dir: Path) -> None:
    async def scenario(agent: Agent) -> None:
        stream = agent.stream()
        await stream.send(BOTH)
        response = await stream.receive()
        assert response.type_url == SECRET_TYPE
        assert response.version_info and response.nonce
        served = secrets(response)
        assert set(served) == set(BOTH)
        chain = chain_of(served["default"])
        leaf = chain[0]
        assert spiffe_id_of(leaf) == CALLER.uri
        assert leaf.serial_number == agent.svids.leaf(CALLER).serial_number
        key = load_pem_private_key(
            served["default"].tls_certificate.private_key.inline_bytes, password=None)
        assert served["default"].tls_certificate.private_key.inline_bytes.startswith(
            b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
        assert _spki(key.public_key()) == _spki(leaf.public_key())
        roots = roots_of(served["ROOTCA"])
        assert roots == list(agent.svids.roots)
        verified = PolicyBuilder().store(Store(roots)).build_client_verifier().verify(
            leaf, chain[1:])
        assert verified.chain[-1] == roots[0]
        assert agent.counted("meshca_agent_svids_served_total", api="sds") == 1
        assert agent.counted("meshca_agent_open_streams", api="sds") == 1
        assert agent.identities.seen[-1] == PeerCredentials(os.getpid(), os.getuid(),
                                                            os.getgid())
        stream.call.cancel()

    run(socket_dir, scenario)


def test_an_ack_is_not_answered_and_every_change_is_pushed(socket_dir: Path) -> None:
    async def scenario(agent: Agent) -> None:
        stream = agent.stream()
        await stream.send(BOTH)
        first = await stream.receive()
        await stream.ack(first, BOTH)
        await agent.svids.rotate(CALLER)
        # The next message is the renewal: the ACK got none.
        renewed = await stream.receive()
        assert set(secrets(renewed)) == {"default"}  # the roots did not change
        leaf = chain_of(secrets(renewed)["default"])[0]
        assert leaf.serial_number == agent.svids.leaf(CALLER).serial_number
        assert chain_of(secrets(first)["default"])[0].serial_number != leaf.serial_number
        assert renewed.version_info != first.version_info and renewed.nonce != first.nonce
        await stream.ack(renewed, BOTH)
        await agent.svids.add_root()
        rebundled = await stream.receive()
        assert set(secrets(rebundled)) == {"ROOTCA"}
        assert len(roots_of(secrets(rebundled)["ROOTCA"])) == 2
        assert len({first.nonce, renewed.nonce, rebundled.nonce}) == 3
        assert len({first.version_info, renewed.version_info, rebundled.version_info}) == 3
        assert agent.counted("meshca_agent_svids_served_total", api="sds") == 3
        stream.call.cancel()

    run(socket_dir, scenario)


def test_a_nack_is_logged_counted_and_not_resent(socket_dir: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(agent: Agent) -> None:
        stream = agent.stream()
        await stream.send(BOTH)
        first = await stream.receive()
        await stream.ack(first, BOTH)
        await agent.svids.rotate(CALLER)
        rejected = await stream.receive()
        await stream.nack(rejected, first, BOTH, "Failed to load certificate chain")
        await eventually(lambda: agent.counted("meshca_agent_sds_rejections_total") == 1)
        # Neither a repeated request under the same nonce nor a wake-up of the watch without
        # a change sends the rejected version again.
        await stream.nack(rejected, first, BOTH, "Failed to load certificate chain")
        await eventually(lambda: agent.counted("meshca_agent_sds_rejections_total") == 2)
        yielded = agent.svids.states_yielded
        await agent.svids.poke()
        await eventually(lambda: agent.svids.states_yielded > yielded)
        await agent.svids.rotate(CALLER)
        later = await stream.receive()
        leaf = chain_of(secrets(later)["default"])[0]
        assert leaf.serial_number == agent.svids.leaf(CALLER).serial_number
        assert later.nonce != rejected.nonce and later.version_info != rejected.version_info
        assert agent.counted("meshca_agent_sds_rejections_total") == 2
        stream.call.cancel()

    with caplog.at_level(logging.WARNING, logger="meshca.agent.sds"):
        run(socket_dir, scenario)
    nacks = [r for r in caplog.records if "NACK" in r.getMessage()]
    assert nacks and all(r.levelno == logging.WARNING for r in nacks)
    assert "Failed to load certificate chain" in nacks[0].getMessage()


def test_a_request_with_a_stale_nonce_is_ignored(socket_dir: Path) -> None:
    async def scenario(agent: Agent) -> None:
        stream = agent.stream()
        await stream.send(["default"])
        first = await stream.receive()
        await stream.send(["ROOTCA"], version=first.version_info, nonce="not-the-last-nonce")
        await agent.svids.rotate(CALLER)
        # Had the stale request counted, ROOTCA would have come first and `default` not at all.
        pushed = await stream.receive()
        assert set(secrets(pushed)) == {"default"}
        stream.call.cancel()

    run(socket_dir, scenario)


def test_changing_resource_names_gets_a_response_for_the_new_set(socket_dir: Path) -> None:
    async def scenario(agent: Agent) -> None:
        stream = agent.stream()
        await stream.send(["default"])
        first = await stream.receive()
        assert set(secrets(first)) == {"default"}
        await stream.ack(first, BOTH)
        second = await stream.receive()
        assert set(secrets(second)) == set(BOTH)
        assert second.nonce != first.nonce
        stream.call.cancel()

    run(socket_dir, scenario)


def test_unknown_names_get_no_resource_and_are_logged_once(
        socket_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(agent: Agent) -> None:
        stream = agent.stream()
        await stream.send(["file-cert:/etc/certs/cert.pem"])
        # Nothing to send (Envoy would reject an SDS response without its secret): the
        # stream waits, and the next request is still the first answered.
        await stream.send(["default", "file-cert:/etc/certs/cert.pem"])
        first = await stream.receive()
        assert set(secrets(first)) == {"default"}
        await stream.ack(first, ["default", "ROOTCA", "file-cert:/etc/certs/cert.pem"])
        second = await stream.receive()
        assert set(secrets(second)) == set(BOTH)
        stream.call.cancel()

    with caplog.at_level(logging.WARNING, logger="meshca.agent"):
        run(socket_dir, scenario)
    unknown = [r for r in caplog.records if "file-cert:" in r.getMessage()]
    assert len(unknown) == 1


def test_fetch_secrets_answers_once(socket_dir: Path) -> None:
    async def scenario(agent: Agent) -> None:
        response = await agent.stub.FetchSecrets(
            discovery_pb2.DiscoveryRequest(node=NODE, resource_names=["ROOTCA", "default", "x"]),
            timeout=TIMEOUT)
        assert response.type_url == SECRET_TYPE and response.version_info and response.nonce
        served = secrets(response)
        assert set(served) == set(BOTH)
        assert spiffe_id_of(chain_of(served["default"])[0]) == CALLER.uri
        assert agent.svids.watches_started == 1 and agent.svids.open_watches == 0

    run(socket_dir, scenario)


def test_the_watch_stops_when_the_stream_ends(socket_dir: Path) -> None:
    async def scenario(agent: Agent) -> None:
        stream = agent.stream()
        await stream.send(BOTH)
        await stream.receive()
        assert agent.svids.open_watches == 1
        await stream.call.done_writing()  # Envoy closes its side
        assert await asyncio.wait_for(stream.call.read(), TIMEOUT) is grpc.aio.EOF
        assert await stream.call.code() == grpc.StatusCode.OK
        await eventually(lambda: agent.svids.open_watches == 0)
        await eventually(lambda: agent.counted("meshca_agent_open_streams", api="sds") == 0)
        cancelled = agent.stream()  # and when Envoy goes away without closing
        await cancelled.send(BOTH)
        await cancelled.receive()
        assert agent.svids.open_watches == 1
        cancelled.call.cancel()
        await eventually(lambda: agent.svids.open_watches == 0)

    run(socket_dir, scenario)


async def _refused(agent: Agent) -> tuple[grpc.StatusCode, grpc.StatusCode]:
    stream = agent.stream()
    await stream.send(BOTH)
    with pytest.raises(grpc.aio.AioRpcError) as streamed:
        await stream.receive()
    with pytest.raises(grpc.aio.AioRpcError) as fetched:
        await agent.stub.FetchSecrets(discovery_pb2.DiscoveryRequest(resource_names=BOTH),
                                      timeout=TIMEOUT)
    return streamed.value.code(), fetched.value.code()


@pytest.mark.parametrize(("mode", "code"), [
    ("deny", grpc.StatusCode.PERMISSION_DENIED),
    ("refuse", grpc.StatusCode.PERMISSION_DENIED),
    ("unavailable", grpc.StatusCode.UNAVAILABLE),
])
def test_a_caller_without_identity_is_refused(socket_dir: Path, mode: str,
                                              code: grpc.StatusCode) -> None:
    async def scenario(agent: Agent) -> None:
        agent.identities.mode = mode
        assert await _refused(agent) == (code, code)
        assert agent.svids.watches_started == 0

    run(socket_dir, scenario)


def test_an_identity_with_nothing_to_serve(socket_dir: Path) -> None:
    async def scenario(agent: Agent) -> None:
        agent.svids.empty = True
        assert await _refused(agent) == (grpc.StatusCode.PERMISSION_DENIED,) * 2
        agent.svids.empty = False
        agent.svids.fail = True
        assert await _refused(agent) == (grpc.StatusCode.UNAVAILABLE,) * 2
        assert agent.svids.open_watches == 0

    run(socket_dir, scenario)


def test_an_open_stream_ends_unavailable_when_its_source_fails(socket_dir: Path) -> None:
    async def scenario(agent: Agent) -> None:
        stream = agent.stream()
        await stream.send(BOTH)
        await stream.receive()
        agent.svids.fail = True
        await agent.svids.poke()
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stream.receive()
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        await eventually(lambda: agent.svids.open_watches == 0)

    run(socket_dir, scenario)


def test_delta_secrets_is_unimplemented(socket_dir: Path) -> None:
    async def scenario(agent: Agent) -> None:
        call = agent.stub.DeltaSecrets()
        await call.write(discovery_pb2.DeltaDiscoveryRequest(
            node=NODE, type_url=SECRET_TYPE, resource_names_subscribe=["default"]))
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await asyncio.wait_for(call.read(), TIMEOUT)
        assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED

    run(socket_dir, scenario)


def test_the_socket_is_open_to_every_local_user(socket_dir: Path) -> None:
    async def scenario(agent: Agent) -> None:
        path = Path(agent.server.socket_path)
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o666
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755

    run(socket_dir, scenario)
    assert not (socket_dir / "run" / "sds.sock").exists()  # removed on stop


async def _probe(socket_path: str, user: str | None) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.agent.sds_probe", socket_path, *([user] if user else []),
        cwd=REPO, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(process.communicate(), 3 * TIMEOUT)
    assert process.returncode == 0
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.mark.skipif(os.geteuid() != 0, reason="calling as `nobody` needs root")
def test_each_connection_is_attested_from_its_own_peer_credentials(socket_dir: Path) -> None:
    nobody = 65534
    identities = FakeWorkloadIdentities({0: CALLER, nobody: OTHER}, default=None)

    async def scenario(agent: Agent) -> None:
        stream = agent.stream()  # this process, as root, stays connected meanwhile
        await stream.send(["default"])
        mine = spiffe_id_of(chain_of(secrets(await stream.receive())["default"])[0])
        as_root, as_nobody = await asyncio.gather(_probe(agent.server.socket_path, None),
                                                  _probe(agent.server.socket_path, "nobody"))
        assert (mine, as_root["spiffe_id"]) == (CALLER.uri, CALLER.uri)
        assert as_nobody["uid"] == nobody and as_nobody["spiffe_id"] == OTHER.uri
        seen = {(peer.pid, peer.uid, peer.gid) for peer in agent.identities.seen}
        assert seen == {(os.getpid(), 0, os.getgid()),
                        (as_root["pid"], 0, as_root["gid"]),
                        (as_nobody["pid"], nobody, as_nobody["gid"])}
        agent.identities.by_uid.pop(nobody)  # no entry: no identity
        assert (await _probe(agent.server.socket_path, "nobody"))["code"] == "PERMISSION_DENIED"
        stream.call.cancel()

    run(socket_dir, scenario, identities)


def test_other_identity_gets_its_own_secrets(socket_dir: Path) -> None:
    async def scenario(agent: Agent) -> None:
        agent.identities.default = OTHER
        response = await agent.stub.FetchSecrets(
            discovery_pb2.DiscoveryRequest(resource_names=["default"]), timeout=TIMEOUT)
        leaf = chain_of(secrets(response)["default"])[0]
        assert SpiffeId.parse(spiffe_id_of(leaf)) == OTHER
        assert OTHER.trust_domain == TRUST_DOMAIN

    run(socket_dir, scenario)
