"""TLS in front of the gRPC server, so that client certificates are verified when presented.

grpcio's Python server can either require a client certificate or not ask for one at all;
Istio's CA contract needs the middle ground (Go's VerifyClientCertIfGiven): token callers
without a certificate, and renewing callers presenting a mesh certificate. meshca therefore
terminates TLS itself (`TlsListener`, `ssl` with CERT_OPTIONAL against the trust bundle) and
relays each connection's HTTP/2 bytes to the gRPC server over a Unix socket.

Identity stays bound to the connection that proved it (docs/architecture.md): the gRPC server
listens only inside a private directory (0700, random name) that no other user can enter,
and every relayed connection comes from a client socket bound to a fresh random name in that
directory. grpc reports that name as the call's peer, and the proven certificate is looked up
by it. Nothing reachable from another local user (no TCP port, no file it can open) carries
or implies who a caller is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import socket
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from meshca.transport.tls_listener import Connection, TlsPeer

log = logging.getLogger(__name__)
T = TypeVar("T")
_UNIX_PATH_MAX = 100  # sun_path holds 108 bytes; keep a margin


@dataclass(frozen=True, slots=True)
class Peer:
    address: str  # the client's own address, "host:port"
    certificate: bytes | None  # DER of its verified certificate, if it showed one


class ConnectionPeers(Generic[T]):
    """What each relayed connection proved, by the private socket name grpc reports as the
    call's peer (`unix:<private dir>/c-<random>`). Filled only by `relay_connection`."""

    def __init__(self) -> None:
        self._by_name: dict[str, T] = {}

    def get(self, grpc_peer: str) -> T | None:
        return self._by_name.get(grpc_peer)

    def _add(self, name: str, value: T) -> None:
        self._by_name[name] = value

    def _remove(self, name: str) -> None:
        self._by_name.pop(name, None)

    def __len__(self) -> int:
        return len(self._by_name)


class PeerCertificates(ConnectionPeers[Peer]):
    """The TLS front's table: each connection's client address and verified certificate."""

    def lookup(self, grpc_peer: str) -> bytes | None:
        peer = self.get(grpc_peer)
        return peer.certificate if peer else None

    def client_address(self, grpc_peer: str) -> str:
        peer = self.get(grpc_peer)
        return peer.address if peer else "unknown"


class PrivateSocketDir:
    """A directory only this process's user can enter, for the relay's Unix sockets."""

    def __init__(self, base: str | None = None) -> None:
        parent = base or tempfile.gettempdir()
        if len(parent) > _UNIX_PATH_MAX - 60:
            parent = "/tmp"  # noqa: S108 - only a parent for mkdtemp's private directory
        self.path = Path(tempfile.mkdtemp(prefix="meshca-", dir=parent))  # created 0700
        os.chmod(self.path, 0o700)

    @property
    def upstream(self) -> str:
        return str(self.path / "grpc.sock")

    def client_name(self) -> str:
        return str(self.path / f"c-{secrets.token_hex(16)}")

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class GrpcRelay:
    """Serves each TLS connection by relaying it to the gRPC server's private Unix socket."""

    def __init__(self, sockets: PrivateSocketDir, peers: PeerCertificates) -> None:
        self._sockets = sockets
        self._peers = peers

    def __call__(self, transport: asyncio.Transport, peer: TlsPeer,
                 connection: Connection) -> asyncio.Protocol:
        return relay_connection(self._sockets, self._peers, Peer(peer.address, peer.certificate),
                                connection)


def relay_connection(sockets: PrivateSocketDir, peers: ConnectionPeers[T], proven: T,
                     connection: Connection) -> RelayClientSide:
    """The protocol that relays one accepted connection to the private gRPC socket, from a
    client socket with a fresh random name under which `proven` is kept while it lives."""
    client = RelayClientSide(connection)
    client.connecting = asyncio.get_running_loop().create_task(
        _connect(sockets, peers, proven, client))
    return client


async def _connect(sockets: PrivateSocketDir, peers: ConnectionPeers[T], proven: T,
                   client: RelayClientSide) -> None:
    loop = asyncio.get_running_loop()
    name = sockets.client_name()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    grpc_peer = f"unix:{name}"
    try:
        sock.bind(name)
        # Registered before the first byte is relayed, so grpc never sees an unknown peer.
        peers._add(grpc_peer, proven)
        await loop.sock_connect(sock, sockets.upstream)
        # The name stays with the connected socket (grpc reads it with getpeername).
        os.unlink(name)
        _, upstream = await loop.create_connection(lambda: RelayUpstreamSide(client), sock=sock)
    except (OSError, asyncio.CancelledError):
        peers._remove(grpc_peer)
        with contextlib.suppress(OSError):
            os.unlink(name)
        sock.close()
        client.abort()
        return
    client.attach(upstream, lambda: peers._remove(grpc_peer))


class RelayClientSide(asyncio.Protocol):
    """The TLS side: bytes go to the upstream as they come; held while it connects."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.upstream: RelayUpstreamSide | None = None
        self.connecting: asyncio.Task[None] | None = None
        self._held: list[bytes] = []
        self._closed = False
        self._on_close: list[Callable[[], None]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def attach(self, upstream: RelayUpstreamSide, on_close: Callable[[], None]) -> None:
        self._on_close.append(on_close)
        if self._closed:
            upstream.close()
            self._run_on_close()
            return
        self.upstream = upstream
        for data in self._held:
            upstream.write(data)
        self._held.clear()

    def data_received(self, data: bytes) -> None:
        self._connection.touch(self._loop.time())
        if self.upstream is not None:
            self.upstream.write(data)
        else:
            self._held.append(data)

    def eof_received(self) -> bool | None:
        return None  # closes this side; connection_lost closes the upstream

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._connection.release()
        if self.connecting is not None and not self.connecting.done():
            self.connecting.cancel()
        if self.upstream is not None:
            self.upstream.close()
        self._run_on_close()

    def _run_on_close(self) -> None:
        for callback in self._on_close:
            callback()
        self._on_close.clear()

    # The upstream side calls these.
    def write(self, data: bytes) -> None:
        self._connection.touch(self._loop.time())
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class RelayUpstreamSide(asyncio.Protocol):
    """The gRPC server's side of one relayed connection."""

    def __init__(self, client: RelayClientSide) -> None:
        self._client = client
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._client.write(data)

    def pause_writing(self) -> None:
        if self._client.transport is not None:
            self._client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self._client.transport is not None:
            self._client.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._client.close()

    def write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def pause_reading(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def server_ssl_context(serving_file: str, password: bytes | None, bundle_pem: str,
                       alpn: tuple[str, ...] = ("h2",)) -> ssl.SSLContext:
    """`serving_file` holds the (encrypted) key and the certificate chain."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain_once(context, serving_file, password)
    context.load_verify_locations(cadata=bundle_pem)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.set_alpn_protocols(list(alpn))
    return context


def _load_chain_once(context: ssl.SSLContext, serving_file: str, password: bytes | None) -> None:
    """`load_cert_chain(file)` opens the file twice (the chain, then the key): a replacement in
    between pairs a new key with an old certificate (KEY_VALUES_MISMATCH), and the listener kept
    serving the old, soon expired, certificate. So: read the file once, load a private copy."""
    data = Path(serving_file).read_bytes()
    fd, snapshot = tempfile.mkstemp(prefix=".snapshot-", dir=os.path.dirname(serving_file) or None)
    try:
        with os.fdopen(fd, "wb") as out:  # mkstemp: 0600, in the serving file's private directory
            out.write(data)
        context.load_cert_chain(snapshot, password=password)
    finally:
        os.unlink(snapshot)
