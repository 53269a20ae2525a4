"""ASGI guards around the whole admin API: response headers every answer carries, and a cap on
request bodies that holds before any byte is parsed."""

from __future__ import annotations

import json

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# HTTPS only, never sniffed, never cached (answers can hold tokens, keys' metadata, audit).
SECURITY_HEADERS = (
    ("strict-transport-security", "max-age=31536000"),
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
    ("x-frame-options", "DENY"),
    # Scripts and styles only from files this server serves (the console's and Swagger UI's,
    # vendored): no inline script, no CDN; never framed; fetches only back to this origin.
    ("content-security-policy",
     "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
     "base-uri 'none'"),
    ("referrer-policy", "no-referrer"),
)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)


class RequestLimits:
    """431 for a request head over `head_limit` bytes; 413 for a body over `limit` bytes,
    announced (Content-Length) or streamed (chunked). The body is read whole (at most `limit`
    bytes) before the app runs, so an oversized one is never parsed; the answer states the
    limit and echoes nothing of the input."""

    def __init__(self, app: ASGIApp, limit: int, head_limit: int) -> None:
        self.app = app
        self.limit = limit
        self.head_limit = head_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = len(scope.get("raw_path", b"")) + len(scope.get("query_string", b""))
        head += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if head > self.head_limit:
            await _refuse(scope, send, 431, "Request Header Fields Too Large",
                          f"the request head is larger than {self.head_limit} bytes "
                          "(--max-header-bytes)")
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await self._refuse(scope, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        await _refuse(scope, send, 413, "Content Too Large",
                      f"the request body is larger than {self.limit} bytes (--max-request-bytes)")


async def _refuse(scope: Scope, send: Send, status: int, title: str, detail: str) -> None:
    body = json.dumps({"type": "about:blank", "title": title, "status": status,
                       "detail": detail, "instance": scope.get("path", "")[:200]}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
