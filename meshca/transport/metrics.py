"""Prometheus metrics under Istio's names, so existing dashboards and alerts keep working.

prometheus_client's Counter would expose `<name>_total`; Istio's series are named
`citadel_server_csr_count` and so on, so those counters are served by a small collector.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

_HELP = {
    "citadel_server_csr_count": "CreateCertificate requests received.",
    "citadel_server_success_cert_issuance_count": "Certificates issued.",
    "citadel_server_authentication_failure_count": "Requests whose caller was not authenticated.",
}
_SIGN_ERR = "citadel_server_csr_sign_err_count"


class CaMetrics(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._counts: Tally[str] = Tally()
        self._sign_errors: Tally[str] = Tally()
        self._root_expiry = 0.0
        registry.register(self)
        self.issuance_seconds = Histogram(
            "meshca_issuance_duration_seconds",
            "Time from request to a signed, recorded certificate.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )

    def csr_received(self) -> None:
        self._add("citadel_server_csr_count")

    def issued(self) -> None:
        self._add("citadel_server_success_cert_issuance_count")

    def authentication_failed(self) -> None:
        self._add("citadel_server_authentication_failure_count")

    def sign_error(self, error: str) -> None:
        with self._lock:
            self._sign_errors[error] += 1

    def set_root_expiry(self, unix_time: float) -> None:
        self._root_expiry = unix_time

    def _add(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts = dict(self._counts)
            errors = dict(self._sign_errors)
        for name, help_text in _HELP.items():
            metric = Metric(name, help_text, "counter")
            metric.add_sample(name, {}, float(counts.get(name, 0)))
            yield metric
        metric = Metric(_SIGN_ERR, "Requests that ended without a certificate, by error.", "counter")
        for error, count in sorted(errors.items()):
            metric.add_sample(_SIGN_ERR, {"error": error}, float(count))
        yield metric
        gauge = Metric(
            "citadel_server_root_cert_expiry_timestamp",
            "Unix time at which the earliest root in the trust bundle expires.",
            "gauge",
        )
        gauge.add_sample("citadel_server_root_cert_expiry_timestamp", {}, self._root_expiry)
        yield gauge
