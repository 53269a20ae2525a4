"""ext_authz denies whatever it cannot check, within a bounded time, and says little about why.

Attacks from the review, against a real `meshca serve` over gRPC with the CheckRequests Envoy
sends: a `source.certificate` that does not parse was ALLOWED; with the database locked each
check hung 30 s and ended as gRPC UNKNOWN (so Envoy's failure_mode_allow decided); deny bodies
named the deciding policy and whether an identity was blocked.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import pytest
import yaml
from cryptography import x509
from envoy.service.auth.v3 import external_auth_pb2_grpc

from meshca.service.policy_store import PolicyStore
from meshca.transport.ext_authz.server import AuthorizationServicer
from tests.fakes.authz_metrics import FakeAuthzMetrics
from tests.integration.authz_envoy import check_request
from tests.integration.test_ca_rotation import api, eventually, metrics
from tests.support import MeshcaProcess, csr_pem, ec_key, start_meshca

TD = "spiffe://cluster.local"
WEB = f"{TD}/ns/shop/sa/web"
STALENESS = 1.5  # --ext-authz-max-staleness of these servers, seconds
FAST = ("--ext-authz-refresh", "0.2s", "--ext-authz-max-staleness", f"{STALENESS}s",
        "--ca-reload-interval", "0.5s")
BOUND = 0.1  # every answer within this, whatever the database does (Envoy's default: 0.2 s)
NO_ADMIN = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "no-admin", "namespace": "shop"},
            "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]}]}}


def envoy_request(path: str = "/cart", principal: str | None = WEB,
                  certificate: str | None = None) -> Any:
    """What Envoy sends; `certificate` as with `include_peer_certificate` (URL-encoded PEM)."""
    request = check_request({
        "protocol": "HTTP", "source": {"principal": principal, "ip": "10.0.0.7"},
        "destination": {"namespace": "shop", "labels": {"app": "cart"}, "port": 8080},
        "http": {"method": "GET", "path": path, "host": "cart.shop", "headers": {}}})
    if certificate is not None:
        request.attributes.source.certificate = quote(certificate)
    return request


def ext_authz_addr(server: MeshcaProcess) -> str:
    return str(json.loads((server.data_dir / "endpoints.json").read_text())["ext_authz"])


def body(response: Any) -> dict[str, Any]:
    assert response.status.code == 7, response  # PERMISSION_DENIED
    assert response.denied_response.status.code == 403
    decoded: dict[str, Any] = json.loads(response.denied_response.body)
    return decoded


def issue(server: MeshcaProcess, namespace: str = "shop", account: str = "web") -> list[str]:
    return server.create_certificate(csr_pem(ec_key()), token=server.token(namespace, account))


def decisions(server: MeshcaProcess) -> dict[tuple[str, str], float]:
    return {(dict(labels)["decision"], dict(labels)["reason"]): value
            for (name, labels), value in metrics(server).items()
            if name == "meshca_ext_authz_decisions_total"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshcaProcess]:
    root = tmp_path_factory.mktemp("extauthz")
    (root / "policies").mkdir()
    (root / "policies" / "no-admin.yaml").write_text(yaml.safe_dump(NO_ADMIN))
    process = start_meshca(root / "data", "--policy-dir", str(root / "policies"), *FAST)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def stub(server: MeshcaProcess) -> Iterator[Any]:
    with grpc.insecure_channel(ext_authz_addr(server)) as channel:
        yield external_auth_pb2_grpc.AuthorizationStub(channel)


def test_a_certificate_that_does_not_parse_is_denied(server: MeshcaProcess, stub: Any) -> None:
    assert stub.Check(envoy_request(), timeout=5).status.code == 0
    leaf = issue(server)[0]
    assert stub.Check(envoy_request(certificate=leaf), timeout=5).status.code == 0
    for junk in ("not a certificate", leaf.replace("\n", "").replace("-----", "--", 1),
                 leaf[:200] + leaf[260:], "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"):
        response = stub.Check(envoy_request(certificate=junk), timeout=5)
        assert body(response) == {"decision": "DENY", "reason": "certificate-unparseable"}


def test_revoked_blocked_and_policy_denials_say_only_decision_and_a_coarse_reason(
        server: MeshcaProcess, stub: Any) -> None:
    leaf = issue(server)[0]
    serial = format(x509.load_pem_x509_certificate(leaf.encode()).serial_number, "x")
    assert stub.Check(envoy_request(certificate=leaf), timeout=5).status.code == 0
    api(server, "POST", f"/v1/certificates/{serial}:revoke", {"reason": "keyCompromise"})
    revoked = eventually(lambda: (r := stub.Check(envoy_request(certificate=leaf), timeout=5))
                         .status.code and r, what="the revoked certificate denied")
    blocked_id = f"{TD}/ns/shop/sa/intruder"
    api(server, "POST", f"/v1/identities/{quote(blocked_id, safe='')}:block", {"reason": "incident"})
    blocked = eventually(lambda: (r := stub.Check(envoy_request(principal=blocked_id), timeout=5))
                         .status.code and r, what="the blocked identity denied")
    by_policy = stub.Check(envoy_request("/admin/users"), timeout=5)

    for response, reason in ((revoked, "identity"), (blocked, "identity"), (by_policy, "policy")):
        assert body(response) == {"decision": "DENY", "reason": reason}
        assert response.status.message == reason
        assert [(h.header.key, h.header.value) for h in response.denied_response.headers] == [
            ("x-meshca-authz", "DENY"), ("content-type", "application/json")]
        wire = response.SerializeToString()
        for secret in (b"no-admin", b"blocked", b"revoked", b"intruder", serial.encode()):
            assert secret not in wire, secret
    allowed = stub.Check(envoy_request(), timeout=5)
    assert [(h.header.key, h.header.value) for h in allowed.ok_response.headers] == [
        ("x-meshca-authz", "ALLOW")]
    # The details are in the log (at DEBUG) and the metrics, not on the wire.
    counted = decisions(server)
    assert counted[("DENY", "revoked")] >= 1 and counted[("DENY", "blocked")] >= 1


def test_decisions_are_counted_by_reason(server: MeshcaProcess, stub: Any) -> None:
    before = decisions(server)
    for request, times in ((envoy_request(), 3), (envoy_request("/admin/x"), 2),
                           (envoy_request(certificate="garbage"), 4)):
        for _ in range(times):
            stub.Check(request, timeout=5)
    after = decisions(server)
    delta = {key: after.get(key, 0) - before.get(key, 0) for key in after}
    assert {k: v for k, v in delta.items() if v} == {
        ("ALLOW", "no-policy"): 3, ("DENY", "policy"): 2, ("DENY", "certificate-unparseable"): 4}
    scraped = metrics(server)
    age = scraped[("meshca_ext_authz_identity_state_age_seconds", frozenset({"worker": "0"}.items()))]
    assert 0 <= age < STALENESS
    assert scraped[("meshca_ext_authz_identity_refreshes_total",
                    frozenset({"outcome": "ok"}.items()))] >= 1


def test_a_certificate_under_a_tainted_key_is_denied(server: MeshcaProcess, stub: Any) -> None:
    leaf = issue(server)[0]
    assert stub.Check(envoy_request(certificate=leaf), timeout=5).status.code == 0
    signing = next(g for g in api(server, "GET", "/v1/ca")["generations"] if g["signing"])
    api(server, "POST", f"/v1/ca/generations/{signing['id']}:taint", {"reason": "leaked"})
    eventually(lambda: stub.Check(envoy_request(certificate=leaf), timeout=5).status.code == 7,
               what="the certificate under the tainted key denied")
    assert decisions(server)[("DENY", "tainted-issuer")] >= 1
    tainted = int(signing["serial"], 16)
    def under_new_key() -> list[str] | None:
        chain = issue(server)
        return chain if x509.load_pem_x509_certificate(chain[1].encode()).serial_number != tainted else None

    fresh = eventually(under_new_key, what="a certificate under the new key")
    assert stub.Check(envoy_request(certificate=fresh[0]), timeout=5).status.code == 0


def test_a_locked_database_never_delays_a_check_and_stale_state_is_denied(tmp_path: Path) -> None:
    process = start_meshca(tmp_path / "data", *FAST)
    try:
        with grpc.insecure_channel(ext_authz_addr(process)) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            assert stub.Check(envoy_request(), timeout=5).status.code == 0
            # As the review did: a writer holds the database; every read of it now waits.
            lock = sqlite3.connect(process.data_dir / "meshca.db", isolation_level=None, timeout=10)
            lock.execute("BEGIN EXCLUSIVE")
            locked_at = time.monotonic()
            samples = []
            try:
                while (since := time.monotonic() - locked_at) < STALENESS + 1.5:
                    started = time.monotonic()
                    response = stub.Check(envoy_request(), timeout=0.2)  # Envoy's default timeout
                    samples.append((since, time.monotonic() - started, response))
                    time.sleep(0.02)
            finally:
                lock.rollback()
                lock.close()
            took = [seconds for _, seconds, _ in samples]
            assert max(took) < BOUND, f"slowest {max(took) * 1000:.1f} ms"
            # The last good snapshot serves while fresh enough (it was at most one refresh
            # interval old when the lock was taken), then every check is denied as stale.
            early = [r for since, _, r in samples if since < STALENESS - 0.4]
            late = [r for since, _, r in samples if since > STALENESS + 0.3]
            assert early and all(r.status.code == 0 for r in early)
            assert late and all(body(r) == {"decision": "DENY", "reason": "identity-state-stale"}
                                for r in late)
            eventually(lambda: stub.Check(envoy_request(), timeout=0.2).status.code == 0,
                       what="allowed again once the database answers")
        counted = decisions(process)
        assert counted[("DENY", "identity-state-stale")] >= len(late)
        refreshes = {dict(labels)["outcome"]: value for (name, labels), value in
                     metrics(process).items() if name == "meshca_ext_authz_identity_refreshes_total"}
        assert refreshes.get("slow", 0) + refreshes.get("failed", 0) >= 1, refreshes
        assert "identity state is" in process.log_text()
        print(f"checks while locked: {len(took)}, median {statistics.median(took) * 1000:.2f} ms, "
              f"max {max(took) * 1000:.2f} ms")
    finally:
        process.stop()


# ---- meshca failing inside a check: DENY, never UNKNOWN -----------------------------------

class _ExplodingStore(PolicyStore):
    def check(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("index corrupted at 0xdeadbeef")



class _ExplodingIdentities:
    def refusal(self, principal: str | None, certificate: str) -> Any:
        raise KeyError("snapshot")


class _ExplodingMetrics(FakeAuthzMetrics):
    def authz_decision(self, decision: str, reason: str) -> None:
        raise OSError("shared memory gone")


@pytest.mark.parametrize("servicer", [
    lambda m: AuthorizationServicer(_ExplodingStore(), metrics=m),
    lambda m: AuthorizationServicer(PolicyStore(), _ExplodingIdentities(), metrics=m),
    lambda m: AuthorizationServicer(PolicyStore(), metrics=_ExplodingMetrics()),
], ids=["store", "identity-check", "metrics"])
def test_an_internal_error_is_a_deny_not_unknown(servicer: Any, caplog: pytest.LogCaptureFixture) -> None:
    counting = FakeAuthzMetrics()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(servicer(counting), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="meshca.transport.ext_authz.server"), \
                grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            responses = [stub.Check(envoy_request(), timeout=5) for _ in range(3)]  # no RpcError
    finally:
        server.stop(None)
    for response in responses:
        assert body(response) == {"decision": "DENY", "reason": "internal"}
        wire = response.SerializeToString()
        assert b"deadbeef" not in wire and b"snapshot" not in wire and b"Traceback" not in wire
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None, "the traceback, logged once"
    assert len([r for r in caplog.records if r.exc_info]) == 3  # the repeats at DEBUG
    if counting.decisions:
        assert counting.decisions == [("DENY", "internal")] * 3
