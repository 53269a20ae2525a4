"""Retention metrics: rows this process deleted, and rows on record after the last pass."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from meshca.service.retention import TABLES, RetentionJob


class RetentionCollector:
    def __init__(self, job: RetentionJob, registry: CollectorRegistry) -> None:
        self._job = job
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        pruned = Metric("meshca_retention_pruned", "Rows deleted by retention in this replica, "
                        "by table.", "counter")
        for table in TABLES:
            pruned.add_sample("meshca_retention_pruned_total", {"table": table},
                              float(self._job.pruned[table]))
        yield pruned
        stored = Metric("meshca_stored_rows", "Rows on record, by table, as counted after the "
                        "last retention pass.", "gauge")
        for table, count in self._job.stored.items():
            stored.add_sample("meshca_stored_rows", {"table": table}, float(count))
        yield stored
