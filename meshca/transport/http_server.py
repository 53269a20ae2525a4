"""HTTP servers (the admin API over TLS, metrics in plaintext): uvicorn's HTTP/1.1 protocol on
meshca's own listener, so the listener's limits hold for them too.

The TLS connection and the HTTP protocol serving it are one object in one process, so a
request's client certificate is the one its own connection proved. It reaches the app as the
ASGI TLS extension (`scope["extensions"]["tls"]["client_cert_chain"]`, PEM), set for every
request of that connection and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.server import ServerState

from meshca.transport.tls_listener import Connection, ConnectionLimits, TlsListener, TlsPeer

KEEP_ALIVE_SECONDS = 5


def client_certificate(scope: Scope) -> bytes | None:
    """DER of the certificate this request's connection proved, if it showed one."""
    tls = scope.get("extensions", {}).get("tls")
    chain = tls.get("client_cert_chain") if tls else None
    return ssl.PEM_cert_to_DER_cert(chain[0]) if chain else None


def trust_anchor(scope: Scope) -> bytes | None:
    """DER of the root that vouched for this request's client certificate (the last of the
    verified chain), when the listener knows it."""
    tls = scope.get("extensions", {}).get("tls")
    chain = tls.get("client_cert_chain") if tls else None
    return ssl.PEM_cert_to_DER_cert(chain[-1]) if chain and len(chain) > 1 else None


def _with_tls(app: ASGIApp, peer: TlsPeer) -> ASGIApp:
    # The verified chain, leaf first, root last (the ASGI extension's order).
    chain = ([ssl.DER_cert_to_PEM_cert(der) for der in peer.chain] if peer.chain
             else [ssl.DER_cert_to_PEM_cert(peer.certificate)] if peer.certificate else [])

    async def tagged(scope: Scope, receive: Receive, send: Send) -> None:
        extensions = scope.setdefault("extensions", {})
        # Set here, by the connection; whatever a client sends cannot reach this key.
        extensions["tls"] = {"client_cert_chain": chain, "tls_version": None,
                             "cipher_suite": None, "server_cert": None}
        await app(scope, receive, send)

    return tagged


class HttpServer:
    def __init__(self, name: str, app: ASGIApp, ssl_context: Callable[[], ssl.SSLContext] | None,
                 limits: ConnectionLimits, *, max_header_bytes: int,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self._config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", server_header=False,
            http="h11", timeout_keep_alive=KEEP_ALIVE_SECONDS,
            h11_max_incomplete_event_size=max_header_bytes,
            # Requests in flight (not connections: the listener caps those) before a 503.
            limit_concurrency=limits.max_connections,
        )
        self._config.load()
        self._state = ServerState()
        self.listener = TlsListener(name, ssl_context, self._serve, limits, on_refused)

    def _serve(self, transport: asyncio.Transport, peer: TlsPeer,
               connection: Connection) -> asyncio.Protocol:
        protocol: Any = self._config.http_protocol_class(  # type: ignore[call-arg]
            config=self._config, server_state=self._state, app_state={})
        protocol.app = _with_tls(protocol.app, peer)
        return _Tracked(protocol, connection)

    async def start(self, sock: socket.socket) -> None:
        await self.listener.start(sock)

    def reload(self) -> None:
        self.listener.reload()

    async def stop(self) -> None:
        await self.listener.stop()
        for protocol in list(self._state.connections):
            protocol.shutdown()
        tasks = list(self._state.tasks)
        if tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(tasks, timeout=5)


class _Tracked(asyncio.Protocol):
    """uvicorn's protocol, with traffic and loss reported to the listener's connection slot."""

    def __init__(self, inner: asyncio.Protocol, connection: Connection) -> None:
        self._inner = inner
        self._connection = connection
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._connection.touch(self._loop.time())
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connection.release()
        self._inner.connection_lost(exc)
