"""`GET /metrics` as an ASGI app, served on meshca's own listener (with its limits), not on
prometheus_client's thread-per-connection server. Collecting reads the database (CA state),
so it runs in a thread, off the event loop the admin API and a worker share."""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.types import Receive, Scope, Send


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
            body = await asyncio.to_thread(generate_latest, self._registry)
        await _answer(send, 200, CONTENT_TYPE_LATEST.encode(),
                      b"" if scope["method"] == "HEAD" else body)


async def _answer(send: Send, status: int, content_type: bytes, body: bytes,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode()), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
