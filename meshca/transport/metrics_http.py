"""`GET /metrics` as an ASGI app, served on meshca's own listener (with its limits), not on
prometheus_client's thread-per-connection server. Collecting reads the database (CA state),
so it runs in a thread, off the event loop the admin API and a worker share."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString
from starlette.types import Receive, Scope, Send

from meshca.transport.metrics import BareCounter


def exposition(registry: CollectorRegistry) -> bytes:
    """The text format (0.0.4) of every family. prometheus_client writes a counter's HELP and
    TYPE lines as `<name>_total`, which is right for its own samples but not for Istio's
    suffix-less counters (`citadel_server_csr_count`): there the TYPE line would name a family
    no sample belongs to, and parsers (Prometheus' own Python one among them) would type the
    samples `unknown`. Those families (BareCounter) are written here under their exact names,
    as Istio's exporter writes them; every other family goes through prometheus_client."""
    parts: list[bytes] = []
    for metric in registry.collect():
        if isinstance(metric, BareCounter):
            parts.append(_bare_counter(metric))
        else:
            parts.append(generate_latest(_Just((metric,))))
    return b"".join(parts)


class _Just:
    """A registry of the given families, for generate_latest."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._metrics


def _bare_counter(metric: Metric) -> bytes:
    help_text = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
    lines = [f"# HELP {metric.name} {help_text}", f"# TYPE {metric.name} counter"]
    for sample in metric.samples:
        labels = ",".join(f'{key}="{_escape(value)}"' for key, value in sorted(sample.labels.items()))
        value = str(floatToGoString(sample.value))  # type: ignore[no-untyped-call]
        lines.append(f"{sample.name}{{{labels}}} {value}" if labels else f"{sample.name} {value}")
    return ("\n".join(lines) + "\n").encode()


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


class MetricsApp:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._lock = asyncio.Lock()  # one scrape at a time: a scrape storm queues, costs one thread

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/metrics":
            await _answer(send, 404, b"text/plain; charset=utf-8", b"not found; try /metrics\n")
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _answer(send, 405, b"text/plain; charset=utf-8", b"GET /metrics\n",
                          [(b"allow", b"GET, HEAD")])
            return
        async with self._lock:
            body = await asyncio.to_thread(exposition, self._registry)
        await _answer(send, 200, CONTENT_TYPE_LATEST.encode(),
                      b"" if scope["method"] == "HEAD" else body)


async def _answer(send: Send, status: int, content_type: bytes, body: bytes,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode()), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
