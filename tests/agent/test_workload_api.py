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
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf.json_format import MessageToDict
from spiffe import JwtSource, JwtSvid, TrustDomain, WorkloadApiClient
from spiffe._proto import workload_pb2, workload_pb2_grpc
from spiffe.workloadapi.x509_context import X509Context

from meshca.core.jwt import b64url_encode
from tests.fakes.agent_workloads import jwt_key, sign_es256
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


# ---- the JWT profile ----------------------------------------------------------------------


@pytest.fixture
def federated(allowed: Harness) -> Iterator[Harness]:
    allowed.command("federate")
    yield allowed
    allowed.command("unfederate")


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": CALLER.uri, "aud": ["db"], "exp": now + 300, "iat": now}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _validate(stub: Any, svid: str, audience: str = "db") -> Any:
    return stub.ValidateJWTSVID(workload_pb2.ValidateJWTSVIDRequest(audience=audience, svid=svid),
                                metadata=HEADER, timeout=TIMEOUT)


def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as failure:
        call()
    return failure.value.code(), failure.value.details() or ""


def test_py_spiffe_fetches_and_validates_a_jwt_svid(client: WorkloadApiClient) -> None:
    svid = client.fetch_jwt_svid(audience={"db"}, timeout=TIMEOUT)
    assert str(svid.spiffe_id) == CALLER.uri and svid.audience == {"db"}
    bundles = client.fetch_jwt_bundles(timeout=TIMEOUT)
    own = bundles.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
    assert own is not None
    # py-spiffe's own validator, with the agent's JWT bundle alone...
    checked = JwtSvid.parse_and_validate(svid.token, own, {"db"})
    assert str(checked.spiffe_id) == CALLER.uri
    # ... and the agent's.
    validated = client.validate_jwt_svid(svid.token, "db", timeout=TIMEOUT)
    assert str(validated.spiffe_id) == CALLER.uri


def test_jwt_source(allowed: Harness) -> None:
    source = JwtSource(socket_path=f"unix://{allowed.socket_path}", timeout_in_seconds=TIMEOUT)
    try:
        svid = source.fetch_svid(audience={"db", "cache"})
        assert svid.audience == {"db", "cache"}
        assert source.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN)) is not None
    finally:
        source.close()


def test_validate_answers_the_claims(stub: Any) -> None:
    token = sign_es256(_claims(extra={"team": "data"}), jwt_key(1), "own-1")
    response = _validate(stub, token)
    assert response.spiffe_id == CALLER.uri
    claims = MessageToDict(response.claims)
    assert claims["sub"] == CALLER.uri and claims["aud"] == ["db"]
    assert claims["extra"] == {"team": "data"}


def test_fetch_jwt_svid_rules(stub: Any) -> None:
    def fetch(audience: list[str], spiffe_id: str = "") -> Any:
        return lambda: stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(
            audience=audience, spiffe_id=spiffe_id), metadata=HEADER, timeout=TIMEOUT)

    assert _code(fetch([]))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert _code(fetch([""]))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert _code(fetch(["db"], "not a spiffe id"))[0] == grpc.StatusCode.INVALID_ARGUMENT
    code, details = _code(fetch(["db"], f"spiffe://{TRUST_DOMAIN}/ns/shop/sa/cart"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "not entitled" in details
    (svid,) = fetch(["db"], CALLER.uri)().svids
    assert svid.spiffe_id == CALLER.uri and svid.svid.count(".") == 2


@pytest.mark.parametrize("mode", ["deny", "refuse"])
def test_jwt_calls_of_a_caller_without_identity_are_permission_denied(
        stub: Any, allowed: Harness, mode: str) -> None:
    allowed.command(mode)
    calls = [lambda: stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=["db"]),
                                       metadata=HEADER, timeout=TIMEOUT),
             lambda: next(iter(stub.FetchJWTBundles(workload_pb2.JWTBundlesRequest(),
                                                    metadata=HEADER, timeout=TIMEOUT))),
             lambda: _validate(stub, sign_es256(_claims(), jwt_key(1), "own-1"))]
    for call in calls:
        assert _code(call)[0] == grpc.StatusCode.PERMISSION_DENIED


def _unsigned() -> str:
    head = b64url_encode(json.dumps({"alg": "none", "kid": "own-1"}).encode())
    return f"{head}.{b64url_encode(json.dumps(_claims()).encode())}."


BAD_TOKENS: dict[str, Callable[[], str]] = {
    "expired": lambda: sign_es256(_claims(exp=int(time.time()) - 600), jwt_key(1), "own-1"),
    "wrong trust domain": lambda: sign_es256(
        _claims(sub="spiffe://nowhere.test/ns/a/sa/b"), jwt_key(1), "own-1"),
    "alg none": _unsigned,
    "unknown kid": lambda: sign_es256(_claims(), jwt_key(1), "own-99"),
    "wrong audience": lambda: sign_es256(_claims(aud=["other"]), jwt_key(1), "own-1"),
    "no exp": lambda: sign_es256(_claims(exp=None), jwt_key(1), "own-1"),
    "signed by another key": lambda: sign_es256(_claims(), jwt_key(7), "own-1"),
    "garbage": lambda: "not.a.jwt",
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_tokens_are_invalid_argument(stub: Any, case: str) -> None:
    code, details = _code(lambda: _validate(stub, BAD_TOKENS[case]()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.startswith("JWT-SVID not valid")


def test_validate_needs_an_audience_and_a_token(stub: Any) -> None:
    token = sign_es256(_claims(), jwt_key(1), "own-1")
    assert _code(lambda: _validate(stub, token, ""))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert _code(lambda: _validate(stub, ""))[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_jwt_bundle_stream_pushes_a_new_key(stub: Any, allowed: Harness) -> None:
    stream = stub.FetchJWTBundles(workload_pb2.JWTBundlesRequest(), metadata=HEADER,
                                  timeout=TIMEOUT)
    key = f"spiffe://{TRUST_DOMAIN}"
    first = json.loads(next(stream).bundles[key])
    kid = allowed.command("jwtkey")["kid"]
    second = json.loads(next(stream).bundles[key])
    stream.cancel()
    assert kid not in {k["kid"] for k in first["keys"]}
    assert kid in {k["kid"] for k in second["keys"]}
    assert all("use" not in k for k in second["keys"])


def test_federated_bundles_reach_py_spiffe(client: WorkloadApiClient, stub: Any,
                                           federated: Harness) -> None:
    foreign = TrustDomain("b.test")
    x509_bundles = client.fetch_x509_bundles(timeout=TIMEOUT)
    foreign_roots = x509_bundles.get_bundle_for_trust_domain(foreign)
    own_roots = x509_bundles.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
    assert foreign_roots is not None and own_roots is not None
    assert not set(foreign_roots.x509_authorities) & set(own_roots.x509_authorities)
    response = next(iter(stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), metadata=HEADER,
                                            timeout=TIMEOUT)))
    assert set(response.federated_bundles) == {"spiffe://b.test"}
    assert response.svids[0].bundle != response.federated_bundles["spiffe://b.test"]
    jwt_bundles = client.fetch_jwt_bundles(timeout=TIMEOUT)
    assert jwt_bundles.get_bundle_for_trust_domain(foreign) is not None
    # A token of the foreign trust domain validates with its key, and not with the own one.
    foreign_token = sign_es256(_claims(sub="spiffe://b.test/ns/x/sa/y"), jwt_key(100),
                               "foreign-1")
    assert _validate(stub, foreign_token).spiffe_id == "spiffe://b.test/ns/x/sa/y"
    as_own = sign_es256(_claims(sub="spiffe://b.test/ns/x/sa/y"), jwt_key(1), "own-1")
    assert _code(lambda: _validate(stub, as_own))[0] == grpc.StatusCode.INVALID_ARGUMENT
