"""The IssuanceCounters port (service/admin_ports.py) over the process's own metrics collector:
the console's live chart reads the same totals /metrics shows, without a Prometheus."""

from __future__ import annotations

from prometheus_client.registry import Collector

from meshca.service.admin_ports import IssuanceCounts

RECEIVED = "citadel_server_csr_count"
ISSUED = "citadel_server_success_cert_issuance_count"
FAILED = "citadel_server_csr_sign_err_count"
REFUSED = "meshca_authentication_failures"


class CollectorIssuanceCounts:
    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    def read(self) -> IssuanceCounts:
        totals: dict[str, float] = {}
        failures: dict[str, float] = {}
        refusals: dict[str, float] = {}
        for family in self._collector.collect():
            for sample in family.samples:
                # Counter samples may or may not carry `_total`: match either spelling.
                name = sample.name.removesuffix("_total")
                if name in (RECEIVED, ISSUED):
                    totals[name] = totals.get(name, 0.0) + sample.value
                elif name == FAILED and sample.value:
                    key = sample.labels.get("error", "unknown")
                    failures[key] = failures.get(key, 0.0) + sample.value
                elif name == REFUSED and sample.value:
                    key = sample.labels.get("reason", "unknown")
                    refusals[key] = refusals.get(key, 0.0) + sample.value
        return IssuanceCounts(totals.get(RECEIVED, 0.0), totals.get(ISSUED, 0.0), failures,
                              refusals)
