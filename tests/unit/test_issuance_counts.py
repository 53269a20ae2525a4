"""The console's issuance counters read the same totals /metrics shows, every worker summed."""

from __future__ import annotations

import grpc
from prometheus_client import CollectorRegistry

from meshca.transport.issuance_counts import CollectorIssuanceCounts
from meshca.transport.metrics import CaMetrics, CaMetricsCollector, shared_slots


def test_counts_sum_every_worker_and_split_failures_by_reason() -> None:
    slots = shared_slots(2)
    collector = CaMetricsCollector(slots, 2, CollectorRegistry())
    counts = CollectorIssuanceCounts(collector)
    assert counts.read().received == 0 and counts.read().failures == {}
    first, second = CaMetrics(slots, 0), CaMetrics(slots, 1)
    for worker in (first, second, second):
        worker.csr_received()
        worker.issued(0.01)
    first.csr_received()
    first.sign_error(grpc.StatusCode.PERMISSION_DENIED)
    second.csr_received()
    second.authentication_failed("expired")
    second.sign_error(grpc.StatusCode.UNAUTHENTICATED)
    now = counts.read()
    assert (now.received, now.issued) == (5, 3)
    assert now.failures == {"permission_denied": 1, "unauthenticated": 1}
    assert now.refusals == {"expired": 1}
