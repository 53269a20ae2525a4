"""The process's own families (`process_*`, `python_gc_*`, `python_info`), as every Prometheus
client library exposes them by default: stock dashboards and alerts on a Python service's
memory, descriptors and garbage collection then work unchanged.

They describe the process that answers `/metrics`: with `--workers N`, the supervisor (worker 0
as well); the other workers show in the container's metrics (cAdvisor)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector


def register_process_metrics(registry: CollectorRegistry) -> None:
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
