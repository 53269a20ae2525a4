"""Refused callers are summarised in the audit log: one row per source, action, target and
reason per interval (`--audit-refusal-interval`), not one per request; each refusal is still
counted in `meshca_refused_requests_total`. Admin mutations and impersonations stay one row
each. The summary itself is tested with hand-made times, including its bound on keys."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshca.config import Settings
from meshca.gen.istio.v1.auth import ca_pb2, ca_pb2_grpc
from meshca.service.ports import AuditEntry
from meshca.service.refusal_summary import (
    OVERFLOW_ACTION,
    OVERFLOW_ACTOR,
    RefusalSummary,
    source_address,
)
from meshca.transport.metrics import CaMetrics, shared_slots
from meshca.wiring.limits import AdminRefusals
from tests.security.limits_support import audit_rows, last_audit_id, metric, wait_for
from tests.support import AdminClient, MeshcaProcess, admin_token, csr_pem, start_meshca

T0 = datetime(2030, 5, 1, 12, 0, 0, tzinfo=UTC)
DETAIL = re.compile(r"(\d+) refusals?: (.*) \((?:at \S+Z|first \S+Z, last \S+Z)\)", re.S)

# ---- the summary, with hand-made times ------------------------------------------------------


def test_seventeen_refusals_make_one_row_with_the_count_and_first_and_last_time() -> None:
    counted: list[str] = []
    summary = RefusalSummary(counted=counted.append)
    for n in range(17):
        summary.add(T0 + timedelta(seconds=n), source="grpc:10.0.0.7", action="CreateCertificate",
                    reason="token has expired", code="expired")
    summary.add(T0, source="grpc:10.0.0.7", action="CreateCertificate",
                reason="no authorization metadata; expected 'Bearer <token>'", code="missing")
    summary.add(T0, source="grpc:10.0.0.8", action="CreateCertificate",
                reason="token has expired", code="expired")
    rows = summary.take()
    assert [(r.actor, r.detail) for r in rows] == [
        ("grpc:10.0.0.7", "17 refusals: token has expired "
                          "(first 2030-05-01T12:00:00Z, last 2030-05-01T12:00:16Z)"),
        ("grpc:10.0.0.7", "1 refusal: no authorization metadata; expected 'Bearer <token>' "
                          "(at 2030-05-01T12:00:00Z)"),
        ("grpc:10.0.0.8", "1 refusal: token has expired (at 2030-05-01T12:00:00Z)"),
    ]
    assert all(r.outcome == "refused" and r.action == "CreateCertificate" and r.at == T0
               for r in rows)
    assert counted == ["expired"] * 17 + ["missing", "expired"]
    assert summary.take() == []  # each interval starts afresh


def test_keys_past_the_cap_are_counted_in_one_overflow_row() -> None:
    counted: list[str] = []
    summary = RefusalSummary(counted=counted.append, max_keys=3)
    for n in range(10):
        summary.add(T0 + timedelta(seconds=n), source=f"grpc:10.0.0.{n}", action="CreateCertificate",
                    reason="token has expired")
    summary.add(T0, source="grpc:10.0.0.1", action="CreateCertificate", reason="token has expired")
    rows = summary.take()
    assert [r.actor for r in rows] == ["grpc:10.0.0.0", "grpc:10.0.0.1", "grpc:10.0.0.2",
                                       OVERFLOW_ACTOR]
    assert rows[1].detail is not None and rows[1].detail.startswith("2 refusals")
    overflow = rows[-1]
    assert overflow.action == OVERFLOW_ACTION
    assert overflow.detail == ("7 refusals: from sources and reasons beyond the 3 itemised per "
                               "interval (first 2030-05-01T12:00:03Z, last 2030-05-01T12:00:09Z)")
    assert len(counted) == 11


def test_what_a_key_holds_is_bounded() -> None:
    summary = RefusalSummary()
    summary.add(T0, source="x" * 10_000, action="CreateCertificate", target="y" * 10_000,
                reason="z" * 10_000)
    [row] = summary.take()
    assert len(row.actor) <= 128 and len(row.target) <= 512
    assert row.detail is not None and len(row.detail) < 400


@pytest.mark.parametrize(("peer", "source"), [
    ("127.0.0.1:5555", "127.0.0.1"), ("[::1]:443", "::1"), ("::1:443", "::1"),
    ("unknown", "unknown"), ("https:10.1.2.3:61000", "https:10.1.2.3"), ("host:", "host:"),
])
def test_the_source_is_the_address_without_the_port(peer: str, source: str) -> None:
    assert source_address(peer) == source


def test_admin_refusals_are_keyed_by_address_or_principal_and_counted() -> None:
    slots = shared_slots(1)
    refusals = AdminRefusals(Settings(), engine=None, metrics=CaMetrics(slots, 0))  # type: ignore[arg-type]
    for port in (40001, 40002, 40003):  # one client, three connections
        refusals(AuditEntry(T0, f"https:10.0.0.9:{port}", "admin.authenticate", "GET /v1/ca",
                            "refused", "admin token is unknown or revoked"))
    refusals(AuditEntry(T0, "token:viewer", "admin.authenticate",
                        "POST /v1/certificates/{serial}:revoke", "refused",
                        "token:viewer has role viewer; this needs operator"))
    rows = refusals.summary.take()
    assert [(r.actor, r.detail and r.detail.split(" (")[0]) for r in rows] == [
        ("https:10.0.0.9", "3 refusals: admin token is unknown or revoked"),
        ("token:viewer", "1 refusal: token:viewer has role viewer; this needs operator")]
    assert sum(slots) == 4


# ---- a real server -------------------------------------------------------------------------

def _summaries(server: MeshcaProcess, after: int, action: str) -> list[tuple[int, str, dict[str, Any]]]:
    """(count, reason, row) of the refusal summaries written after audit id `after`."""
    found = []
    for row in audit_rows(server, after):
        if row["action"] == action and row["outcome"] == "refused":
            match = DETAIL.fullmatch(row["detail"] or "")
            assert match, row["detail"]
            found.append((int(match.group(1)), match.group(2), row))
    return found


@pytest.fixture
def summarising(tmp_path: Path) -> Iterator[MeshcaProcess]:
    server = start_meshca(tmp_path / "data", "--audit-refusal-interval", "1s",
                          "--issuance-rate-per-source", "off")
    yield server
    server.stop()


def test_five_thousand_refused_calls_make_a_handful_of_rows(summarising: MeshcaProcess) -> None:
    server = summarising
    start = last_audit_id(server)
    expired = server.token("shop", "late", ttl_seconds=600, now=time.time() - 7200)
    # Four connections from the one address, 50 calls in flight on each (under the listener's
    # --max-streams-per-connection).
    channels = [grpc.secure_channel(server.grpc_addr, grpc.ssl_channel_credentials(server.bundle_pem),
                                    options=[("grpc.ssl_target_name_override", "localhost")])
                for _ in range(4)]
    stubs = [ca_pb2_grpc.IstioCertificateServiceStub(c) for c in channels]
    request = ca_pb2.IstioCertificateRequest(csr=csr_pem())
    codes: list[grpc.StatusCode] = []
    try:
        for _ in range(25):
            calls = [stubs[n % 4].CreateCertificate.future(
                request, metadata=[("authorization", f"Bearer {expired}")] if n % 2 else [],
                timeout=60) for n in range(200)]
            codes += [call.code() for call in calls]
    finally:
        for channel in channels:
            channel.close()
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 5000

    def all_written() -> list[tuple[int, str, dict[str, Any]]] | None:
        rows = _summaries(server, start, "CreateCertificate")
        return rows if sum(count for count, _, _ in rows) >= 5000 else None

    rows = wait_for(all_written, what="5,000 refusals in the audit log")
    print(f"5,000 refusals -> {len(rows)} audit rows")
    assert sum(count for count, _, _ in rows) == 5000
    assert len(rows) <= 20, [r[:2] for r in rows]  # two reasons, one row each per second
    assert {reason for _, reason, _ in rows} == {
        "no authorization metadata; expected 'Bearer <token>'", "token has expired"}
    assert {row["actor"] for _, _, row in rows} == {"grpc:127.0.0.1"}
    assert metric(server, "meshca_refused_requests_total", transport="grpc", reason="missing") == 2500
    assert metric(server, "meshca_refused_requests_total", transport="grpc", reason="expired") == 2500


def test_refused_admin_requests_are_summarised_per_source(summarising: MeshcaProcess) -> None:
    server = summarising
    start = last_audit_id(server)
    client = AdminClient(server)
    statuses = [client.get("/v1/ca", token="mca_guessed-token-value-0123456789").status
                for _ in range(100)]
    # Ten failures, then the address must wait (--admin-auth-failures): each 429 says how long,
    # which the summary leaves out so that they stay one row.
    assert statuses == [401] * 10 + [429] * 90

    def all_written() -> list[tuple[int, str, dict[str, Any]]] | None:
        rows = _summaries(server, start, "admin.authenticate")
        return rows if sum(count for count, _, _ in rows) >= 100 else None

    rows = wait_for(all_written, what="100 admin refusals in the audit log")
    assert sum(count for count, _, _ in rows) == 100 and len(rows) <= 10
    totals: dict[tuple[str, str, str], int] = {}
    for count, reason, row in rows:
        key = (row["actor"], row["target"], reason)
        totals[key] = totals.get(key, 0) + count
    assert totals == {
        ("https:127.0.0.1", "GET /v1/ca", "admin token is unknown or revoked"): 10,
        ("https:127.0.0.1", "GET /v1/ca", "too many failed authentications from 127.0.0.1"): 90}
    assert metric(server, "meshca_refused_requests_total", transport="admin",
                  reason="credentials") == 10
    assert metric(server, "meshca_refused_requests_total", transport="admin",
                  reason="rate_limited") == 90


def test_mutations_and_impersonations_stay_single_rows_and_summaries_are_written_at_shutdown(
        tmp_path: Path) -> None:
    server = start_meshca(tmp_path / "data", "--audit-refusal-interval", "1h",
                          "--trusted-node-account", "kube-system/ztunnel")
    try:
        start = last_audit_id(server)
        for _ in range(3):
            with pytest.raises(grpc.RpcError):
                server.create_certificate(csr_pem(), metadata=[])
        client = AdminClient(server)
        for _ in range(2):
            assert client.get("/v1/ca", token="mca_not-a-real-token-at-all-000000").status == 401
        created = client.post("/v1/admin-tokens", {"name": "probe", "role": "viewer"},
                              token=admin_token(server))
        assert created.status == 201
        server.create_certificate(
            csr_pem(), token=server.token("kube-system", "ztunnel"),
            struct={"ImpersonatedIdentity": "spiffe://cluster.local/ns/shop/sa/cart"})

        def singles() -> list[dict[str, Any]] | None:
            rows = [r for r in audit_rows(server, start) if r["outcome"] == "ok"]
            return rows if len(rows) >= 2 else None

        rows = wait_for(singles, what="the mutation and the impersonation")
        assert sorted((r["action"], r["target"]) for r in rows) == [
            ("CreateCertificate.impersonate", "spiffe://cluster.local/ns/shop/sa/cart"),
            ("admin-token.create", "probe")]
        assert not [r for r in audit_rows(server, start) if r["outcome"] == "refused"]
    finally:
        server.stop()
    assert server.process.returncode == 0
    grpc_rows = _summaries(server, start, "CreateCertificate")
    admin_rows = _summaries(server, start, "admin.authenticate")
    assert [(c, r) for c, r, _ in grpc_rows] == [
        (3, "no authorization metadata; expected 'Bearer <token>'")]
    assert [(c, r) for c, r, _ in admin_rows] == [(2, "admin token is unknown or revoked")]
