"""Prometheus metrics under Istio's names, so existing dashboards and alerts keep working.

Each worker process counts into its own row of a shared array (one writer per row, no
locks); the process serving `/metrics` sums the rows. prometheus_client's Counter would
also expose `<name>_total`, while Istio's series are `citadel_server_csr_count` and so on,
so the families are built here.
"""

from __future__ import annotations

import bisect
import multiprocessing
from collections.abc import Iterator, MutableSequence

import grpc
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

_COUNTERS = {
    "citadel_server_csr_count": "CreateCertificate requests received.",
    "citadel_server_success_cert_issuance_count": "Certificates issued.",
    "citadel_server_authentication_failure_count": "Requests whose caller was not authenticated.",
}
_SIGN_ERR = "citadel_server_csr_sign_err_count"
_ERRORS = tuple(code.name.lower() for code in grpc.StatusCode if code is not grpc.StatusCode.OK)
_HISTOGRAM = "meshca_issuance_duration_seconds"
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# Row layout: counters, then one slot per error, then histogram buckets (+Inf last), sum.
_CSR, _SUCCESS, _AUTH = 0, 1, 2
_ERR0 = len(_COUNTERS)
_BUCKET0 = _ERR0 + len(_ERRORS)
_SUM = _BUCKET0 + len(BUCKETS) + 1
ROW_WIDTH = _SUM + 1


def shared_slots(workers: int) -> MutableSequence[float]:
    """Zeroed shared memory for `workers` rows; pass it to each worker process."""
    array: MutableSequence[float] = multiprocessing.get_context("spawn").RawArray(
        "d", workers * ROW_WIDTH
    )
    return array


class CaMetrics:
    """What one worker counts, into its own row."""

    def __init__(self, slots: MutableSequence[float], row: int) -> None:
        self._slots = slots
        self._base = row * ROW_WIDTH

    def csr_received(self) -> None:
        self._slots[self._base + _CSR] += 1

    def issued(self, seconds: float) -> None:
        slots, base = self._slots, self._base
        slots[base + _SUCCESS] += 1
        slots[base + _BUCKET0 + bisect.bisect_left(BUCKETS, seconds)] += 1
        slots[base + _SUM] += seconds

    def authentication_failed(self) -> None:
        self._slots[self._base + _AUTH] += 1

    def sign_error(self, code: grpc.StatusCode) -> None:
        self._slots[self._base + _ERR0 + _ERRORS.index(code.name.lower())] += 1


class CaMetricsCollector(Collector):
    """Sums every worker's row; registered once, in the process that serves /metrics."""

    def __init__(self, slots: MutableSequence[float], workers: int,
                 registry: CollectorRegistry) -> None:
        self._slots = slots
        self._workers = workers
        self.root_expiry = 0.0
        registry.register(self)

    def _total(self, offset: int) -> float:
        return sum(self._slots[w * ROW_WIDTH + offset] for w in range(self._workers))

    def collect(self) -> Iterator[Metric]:
        for index, (name, help_text) in enumerate(_COUNTERS.items()):
            metric = Metric(name, help_text, "counter")
            metric.add_sample(name, {}, self._total(index))
            yield metric
        per_worker = Metric("meshca_worker_issued_count",
                            "Certificates issued, by worker process.", "counter")
        for worker in range(self._workers):
            per_worker.add_sample("meshca_worker_issued_count", {"worker": str(worker)},
                                  self._slots[worker * ROW_WIDTH + _SUCCESS])
        yield per_worker
        errors = Metric(_SIGN_ERR, "Requests that ended without a certificate, by error.", "counter")
        for index, error in enumerate(_ERRORS):
            count = self._total(_ERR0 + index)
            if count:
                errors.add_sample(_SIGN_ERR, {"error": error}, count)
        yield errors
        gauge = Metric("citadel_server_root_cert_expiry_timestamp",
                       "Unix time at which the earliest root in the trust bundle expires.", "gauge")
        gauge.add_sample("citadel_server_root_cert_expiry_timestamp", {}, self.root_expiry)
        yield gauge
        histogram = Metric(_HISTOGRAM, "Time from request to a signed, recorded certificate.",
                           "histogram")
        cumulative = 0.0
        for index, bound in enumerate((*BUCKETS, float("inf"))):
            cumulative += self._total(_BUCKET0 + index)
            le = "+Inf" if bound == float("inf") else repr(bound)
            histogram.add_sample(f"{_HISTOGRAM}_bucket", {"le": le}, cumulative)
        histogram.add_sample(f"{_HISTOGRAM}_count", {}, cumulative)
        histogram.add_sample(f"{_HISTOGRAM}_sum", {}, self._total(_SUM))
        yield histogram
