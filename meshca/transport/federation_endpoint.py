"""The SPIFFE bundle endpoint (`--federation-addr`): `GET /` answers this trust domain's
bundle, the same document as the admin API's `/v1/bundle` (JSON form).

Served on meshca's own TLS listener (its connection limits, its handshake and idle timeouts)
by uvicorn's protocol, like the admin API. No client authentication of any kind: the spec
forbids requiring it. Caches must revalidate (`no-cache` with an ETag): a bundle is small, and
one held past a rotation would make a foreign trust domain refuse new SVIDs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.types import Receive, Scope, Send

Document = Callable[[], Mapping[str, Any] | None]  # None: the CA is not loaded yet


class BundleEndpointApp:
    def __init__(self, document: Document) -> None:
        self._document = document

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/":
            await _answer(send, 404, b"not found; the bundle is at /\n")
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _answer(send, 405, b"GET /\n", [(b"allow", b"GET, HEAD")])
            return
        document = self._document()
        if document is None:
            await _answer(send, 503, b"the CA is not loaded yet\n", [(b"retry-after", b"5")])
            return
        body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
        etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
        headers = [(b"etag", etag), (b"cache-control", b"no-cache")]
        if etag in _header(scope, b"if-none-match"):
            await _answer(send, 304, b"", headers, content_type=None)
            return
        await _answer(send, 200, b"" if scope["method"] == "HEAD" else body, headers,
                      content_type=b"application/json", length=len(body))


def _header(scope: Scope, name: bytes) -> bytes:
    return b",".join(value for key, value in scope.get("headers", ()) if key == name)


async def _answer(send: Send, status: int, body: bytes,
                  extra: list[tuple[bytes, bytes]] | None = None, *,
                  content_type: bytes | None = b"text/plain; charset=utf-8",
                  length: int | None = None) -> None:
    headers = [(b"content-length", str(len(body) if length is None else length).encode()),
               *(extra or [])]
    if content_type is not None:
        headers.append((b"content-type", content_type))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
