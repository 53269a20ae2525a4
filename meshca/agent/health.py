"""The agent's `/healthz`, `/readyz` and `/metrics`, as one small ASGI app.

`/healthz` answers while the event loop runs (a liveness probe restarts a wedged agent);
`/readyz` answers 200 only when the agent can serve (its sockets listen and it knows the trust
bundle), and otherwise 503 with the reasons, one per line, so `kubectl describe` says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from starlette.types import Receive, Scope, Send

from meshca.transport.metrics_http import MetricsApp

TEXT = b"text/plain; charset=utf-8"


class HealthApp:
    def __init__(self, not_ready: Callable[[], Sequence[str]], metrics: MetricsApp) -> None:
        self._not_ready = not_ready  # the reasons the agent cannot serve now; empty when it can
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/metrics":
            await self._metrics(scope, receive, send)
            return
        if path not in ("/healthz", "/readyz"):
            await _answer(send, 404, b"not found; try /healthz, /readyz or /metrics\n")
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _answer(send, 405, f"GET {path}\n".encode(), [(b"allow", b"GET, HEAD")])
            return
        reasons = list(self._not_ready()) if path == "/readyz" else []
        body = ("".join(f"{r}\n" for r in reasons) if reasons else "ok\n").encode()
        await _answer(send, 503 if reasons else 200, b"" if scope["method"] == "HEAD" else body)


async def _answer(send: Send, status: int, body: bytes,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", TEXT), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store"), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
