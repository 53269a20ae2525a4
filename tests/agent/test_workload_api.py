"""The Workload API as an unmodified SPIFFE client sees it (contracts.md §3).

The server runs in `tests.agent.workload_harness` (its own process: meshca's generated
Workload API modules and the `spiffe` client cannot share one); the client, py-spiffe's
`WorkloadApiClient` and its own generated stub, runs here, so the kernel reports this
process's pid, uid and gid to the agent.
"""

from __future__ import annotations

import json
import os
import queue
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from spiffe import TrustDomain, WorkloadApiClient
from spiffe._proto import workload_pb2, workload_pb2_grpc
from spiffe.workloadapi.x509_context import X509Context

from tests.unit.pki import CALLER, TRUST_DOMAIN

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0
HEADER = (("workload.spiffe.io", "true"),)


class Harness:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.agent.workload_harness", str(socket_path)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.attested: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        assert self.next_event("ready")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.events.put(json.loads(line))

    def next_event(self, kind: str) -> dict[str, Any]:
        while True:
            event = self.events.get(timeout=TIMEOUT)
            if event["event"] == "attest":
                self.attested.append(event)
            if event["event"] == kind:
                return event

    def command(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        event = self.next_event("done")
        assert event["command"] == command
        return event

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    server = Harness(tmp_path_factory.mktemp("agent") / "run" / "agent.sock")
    yield server
    server.stop()


@pytest.fixture
def allowed(harness: Harness) -> Iterator[Harness]:
    harness.command("allow")
    yield harness
    harness.command("allow")


@pytest.fixture
def client(allowed: Harness, monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkloadApiClient]:
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", f"unix://{allowed.socket_path}")
    workload = WorkloadApiClient()
    yield workload
    workload.close()


@pytest.fixture
def stub(allowed: Harness) -> Iterator[Any]:
    with grpc.insecure_channel(f"unix:{allowed.socket_path}") as channel:
        yield workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)  # type: ignore[no-untyped-call]


def _spki(cert: Any) -> bytes:
    return bytes(cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))


def test_socket_is_open_to_every_local_user(harness: Harness) -> None:
    assert stat.S_IMODE(harness.socket_path.stat().st_mode) == 0o666
    assert stat.S_IMODE(harness.socket_path.parent.stat().st_mode) == 0o755


def test_py_spiffe_fetches_an_x509_svid_and_bundles(client: WorkloadApiClient,
                                                     allowed: Harness) -> None:
    context = client.fetch_x509_context(timeout=TIMEOUT)
    svid = context.default_svid
    assert str(svid.spiffe_id) == CALLER.uri
    assert len(svid.cert_chain) == 2  # the leaf, then the intermediate
    assert _spki(svid.leaf) == bytes(svid.private_key.public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    bundle = context.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
    assert bundle is not None
    roots = bundle.x509_authorities
    assert [r.subject for r in roots] == [svid.cert_chain[1].issuer]
    bundles = client.fetch_x509_bundles(timeout=TIMEOUT)
    only = bundles.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
    assert only is not None and only.x509_authorities == roots


def test_the_agent_sees_the_callers_kernel_credentials(client: WorkloadApiClient,
                                                       allowed: Harness) -> None:
    client.fetch_x509_svid(timeout=TIMEOUT)
    allowed.command("stats")  # every event printed before it has been read
    seen = allowed.attested[-1]
    assert (seen["pid"], seen["uid"], seen["gid"]) == (os.getpid(), os.getuid(), os.getgid())


def test_response_fields_on_the_wire(stub: Any) -> None:
    response = next(iter(stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), metadata=HEADER,
                                            timeout=TIMEOUT)))
    (svid,) = response.svids
    assert svid.hint == "internal"
    assert svid.x509_svid_key.startswith(b"\x30")  # a DER SEQUENCE: PKCS#8
    assert svid.bundle.startswith(b"\x30")
    assert dict(response.federated_bundles) == {}


def test_a_stream_receives_renewal_and_bundle_change_without_reconnecting(
        client: WorkloadApiClient, allowed: Harness) -> None:
    updates: queue.Queue[X509Context] = queue.Queue()
    errors: list[Exception] = []
    accepted_before = allowed.command("stats")["accepted"]
    handle = client.stream_x509_contexts(updates.put, errors.append, retry_connect=False)
    try:
        first = updates.get(timeout=TIMEOUT)
        renewed = allowed.command("rotate")
        second = updates.get(timeout=TIMEOUT)
        assert second.default_svid.leaf.serial_number == renewed["serial"]
        assert second.default_svid.leaf.serial_number != first.default_svid.leaf.serial_number
        changed = allowed.command("bundle")
        third = updates.get(timeout=TIMEOUT)
        bundle = third.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
        assert bundle is not None and len(bundle.x509_authorities) == changed["roots"] == 2
        assert allowed.command("stats")["accepted"] == accepted_before + 1
        assert errors == []
    finally:
        handle.cancel()


def test_bundle_stream_follows_changes(stub: Any, allowed: Harness) -> None:
    stream = stub.FetchX509Bundles(workload_pb2.X509BundlesRequest(), metadata=HEADER,
                                   timeout=TIMEOUT)
    first = next(stream)
    allowed.command("bundle")
    second = next(stream)
    key = f"spiffe://{TRUST_DOMAIN}"
    assert len(second.bundles[key]) > len(first.bundles[key])
    stream.cancel()


@pytest.mark.parametrize("call", ["FetchX509SVID", "FetchX509Bundles", "FetchJWTSVID"])
def test_missing_security_header_is_invalid_argument(stub: Any, call: str) -> None:
    request = {"FetchX509SVID": workload_pb2.X509SVIDRequest(),
               "FetchX509Bundles": workload_pb2.X509BundlesRequest(),
               "FetchJWTSVID": workload_pb2.JWTSVIDRequest(audience=["a"])}[call]
    with pytest.raises(grpc.RpcError) as failure:
        result = getattr(stub, call)(request, timeout=TIMEOUT)
        if call != "FetchJWTSVID":
            next(iter(result))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("mode", ["deny", "refuse"])
def test_caller_without_identity_is_permission_denied(stub: Any, allowed: Harness,
                                                      mode: str) -> None:
    allowed.command(mode)
    with pytest.raises(grpc.RpcError) as failure:
        next(iter(stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), metadata=HEADER,
                                     timeout=TIMEOUT)))
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("call", ["FetchJWTSVID", "FetchJWTBundles", "ValidateJWTSVID"])
def test_jwt_profile_is_unimplemented(stub: Any, call: str) -> None:
    request = {"FetchJWTSVID": workload_pb2.JWTSVIDRequest(audience=["a"]),
               "FetchJWTBundles": workload_pb2.JWTBundlesRequest(),
               "ValidateJWTSVID": workload_pb2.ValidateJWTSVIDRequest(audience="a", svid="x")}
    with pytest.raises(grpc.RpcError) as failure:
        result = getattr(stub, call)(request[call], metadata=HEADER, timeout=TIMEOUT)
        if call == "FetchJWTBundles":
            next(iter(result))
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
