"""A listener (TLS, or plaintext for metrics) with limits a stranger cannot exhaust.

Connections are accepted as plain TCP and counted (per listener and per source address)
BEFORE any TLS work, so a flood of half-open or silent connections costs one file descriptor
each for at most the handshake timeout, and never more than the caps allow. The handshake
runs under `LIMITS.handshake_timeout` with the newest server context (a CA reload needs no
restart, and a root that left the bundle stops being trusted). After the handshake, the
connection is handed, with the peer certificate it proved, to the protocol the caller makes:
identity travels with the connection object itself, never through a side channel.
A sweeper closes connections that moved no byte in either direction for the idle timeout.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import logging
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from meshca.core.connection_limits import ConnectionLimits as ConnectionLimits

log = logging.getLogger(__name__)
SWEEP_SECONDS = 1.0
# asyncio gives every TLS connection a read buffer of this many bytes, touched at once. Its
# default, 256 KiB, is most of what an idle connection costs (~300 KB); a TLS record is at most
# ~16 KiB, so 32 KiB reads lose nothing and an idle connection costs about a quarter.
TLS_READ_BUFFER = 32 * 1024


_UCRED = struct.Struct("iII")  # struct ucred: pid_t pid; uid_t uid; gid_t gid


def _source(transport: asyncio.Transport) -> str:
    """Whose connections are counted together: a TCP peer's address; on a Unix socket (the
    agent's), the peer's uid, so one local user cannot take every slot."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple):
        return str(peer[0])
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family == socket.AF_UNIX:
        uid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))[1]
        return f"uid:{uid}"
    return "unknown"


@dataclass(frozen=True, slots=True)
class TlsPeer:
    """Who is at the other end of one TLS connection, as the handshake proved it."""

    address: str  # "host:port" of the client
    certificate: bytes | None  # DER of the verified client certificate, if one was shown
    # DER of the chain OpenSSL verified, the certificate first and the trusted root last
    # (empty when none was shown): which root vouched for the certificate, when a listener
    # trusts roots of several trust domains (federation).
    chain: tuple[bytes, ...] = ()


class Connection:
    """One accepted connection's slot in the listener's counts, and its last activity."""

    __slots__ = ("_listener", "last_active", "released", "source", "transport")

    def __init__(self, listener: TlsListener, source: str, transport: asyncio.Transport,
                 now: float) -> None:
        self._listener = listener
        self.source = source
        self.transport = transport
        self.last_active = now
        self.released = False

    def touch(self, now: float) -> None:
        self.last_active = now

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._listener._release(self)


class ConnectionHandler(Protocol):
    def __call__(self, transport: asyncio.Transport, peer: TlsPeer,
                 connection: Connection) -> asyncio.Protocol:
        """The protocol that serves this TLS connection from now on. It must call
        `connection.touch` on traffic and `connection.release` when the connection is lost."""


class _Handshaking(asyncio.Protocol):
    """Holds an accepted connection until TLS is up: reading paused until the TLS layer takes
    over, then any application data that arrives before the handler is attached is kept."""

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.eof = False
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.pending.append(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class TlsListener:
    def __init__(self, name: str, ssl_context: Callable[[], ssl.SSLContext] | None,
                 handler: ConnectionHandler, limits: ConnectionLimits,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self.name = name
        self._ssl_context = ssl_context
        self._handler = handler
        self.limits = limits
        self._on_refused = on_refused or (lambda reason: None)
        self._current: ssl.SSLContext | None = None
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._open: set[Connection] = set()
        self._per_source: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def start(self, sock: socket.socket) -> None:
        """Accept on an already bound, listening socket."""
        self.reload()
        asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accepted, sock=sock)
        self._sweeper = loop.create_task(self._sweep())

    def reload(self) -> None:
        """New handshakes use a freshly built context; open connections keep theirs."""
        if self._ssl_context is not None:
            self._current = self._ssl_context()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._tasks):
            task.cancel()
        for connection in list(self._open):
            connection.transport.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def _accepted(self) -> asyncio.Protocol:
        return _Gate(self)

    def _admit(self, transport: asyncio.Transport) -> Connection | None:
        source = _source(transport)
        if len(self._open) >= self.limits.max_connections:
            reason = "max-connections"
        elif self._per_source.get(source, 0) >= self.limits.max_connections_per_source:
            reason = "max-connections-per-source"
        else:
            connection = Connection(self, source, transport, asyncio.get_running_loop().time())
            self._open.add(connection)
            self._per_source[source] = self._per_source.get(source, 0) + 1
            return connection
        self._on_refused(reason)
        log.debug("%s: refused a connection from %s (%s)", self.name, source, reason)
        return None

    def _release(self, connection: Connection) -> None:
        self._open.discard(connection)
        left = self._per_source.get(connection.source, 1) - 1
        if left > 0:
            self._per_source[connection.source] = left
        else:
            self._per_source.pop(connection.source, None)

    def _start_handshake(self, transport: asyncio.Transport, connection: Connection) -> None:
        if self._ssl_context is None:  # a plaintext listener (metrics): served at once
            self._attach(transport, TlsPeer(_address(transport), None), connection, [], False)
            transport.resume_reading()
            return
        task = asyncio.get_running_loop().create_task(self._handshake(transport, connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handshake(self, transport: asyncio.Transport, connection: Connection) -> None:
        loop = asyncio.get_running_loop()
        holder = _Handshaking()
        context = self._current
        assert context is not None
        try:
            tls = await loop.start_tls(transport, holder, context, server_side=True,
                                       ssl_handshake_timeout=self.limits.handshake_timeout)
        except (OSError, ssl.SSLError, ConnectionError, TimeoutError, asyncio.CancelledError):
            self._on_refused("handshake-failed")
            transport.abort()
            connection.release()
            return
        if tls is None or holder.lost or tls.is_closing():
            connection.release()
            return
        ssl_object = tls.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        chain = verified_chain(ssl_object) if der else ()
        connection.transport = tls
        connection.touch(loop.time())
        self._attach(tls, TlsPeer(_address(tls), der or None, chain), connection,
                     holder.pending, holder.eof)

    def _attach(self, transport: asyncio.Transport, peer: TlsPeer, connection: Connection,
                pending: list[bytes], eof: bool) -> None:
        try:
            protocol = self._handler(transport, peer, connection)
        except Exception:
            log.exception("%s: could not serve a connection", self.name)
            transport.abort()
            connection.release()
            return
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        for data in pending:
            protocol.data_received(data)
        if eof:
            protocol.eof_received()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            deadline = loop.time() - self.limits.idle_timeout
            for connection in [c for c in self._open if c.last_active < deadline]:
                log.debug("%s: closing a connection idle for %.0f s", self.name,
                          self.limits.idle_timeout)
                self._on_refused("idle-timeout")
                connection.transport.abort()
                connection.release()


def verified_chain(ssl_object: ssl.SSLObject) -> tuple[bytes, ...]:
    """The verified chain, DER, leaf first. Public in Python 3.13 (`get_verified_chain`); on
    older versions the same call of the `_ssl` object underneath (there since 3.10)."""
    getter = getattr(ssl_object, "get_verified_chain", None)
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_verified_chain", None)
    if getter is None:
        return ()
    chain = getter() or []
    return tuple(c if isinstance(c, bytes) else c.public_bytes(_ENCODING_DER) for c in chain)


_ENCODING_DER = 2  # _ssl.ENCODING_DER


def _address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unknown"


class _Gate(asyncio.Protocol):
    """The first protocol of every accepted socket: counted, or closed at once."""

    def __init__(self, listener: TlsListener) -> None:
        self._listener = listener
        self._connection: Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        # Nothing is read until the TLS layer takes the socket over.
        transport.pause_reading()
        connection = self._listener._admit(transport)
        if connection is None:
            transport.abort()
            return
        self._connection = connection
        self._listener._start_handshake(transport, connection)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._connection is not None:
            self._connection.release()
