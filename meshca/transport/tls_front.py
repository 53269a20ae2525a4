"""TLS in front of the gRPC server, so that client certificates are verified when presented.

grpcio's Python server can either require a client certificate or not ask for one at all;
Istio's CA contract needs the middle ground (Go's VerifyClientCertIfGiven): token callers
without a certificate, and renewing callers presenting a mesh certificate. This front
terminates TLS with the standard `ssl` module (CERT_OPTIONAL against the trust bundle),
then pipes the HTTP/2 bytes to the gRPC server on a loopback-only port. The verified peer
certificate is remembered under the upstream connection's local port, which the gRPC
handler sees as its peer address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)
_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class Peer:
    address: str  # the client's own address, "host:port"
    certificate: bytes | None  # DER of its verified certificate, if it showed one


class PeerCertificates:
    """Who is behind each upstream connection, keyed by that connection's local port.

    The gRPC server sees the peer `ipv4:127.0.0.1:<port>`, the HTTP server `("127.0.0.1", port)`.
    """

    def __init__(self) -> None:
        self._by_port: dict[int, Peer] = {}

    def lookup(self, grpc_peer: str) -> bytes | None:
        peer = self._by_port.get(_port_of(grpc_peer))
        return peer.certificate if peer else None

    def client_address(self, grpc_peer: str) -> str:
        peer = self._by_port.get(_port_of(grpc_peer))
        return peer.address if peer else "unknown"

    def by_port(self, port: int) -> Peer | None:
        return self._by_port.get(port)

    def _add(self, port: int, peer: Peer) -> None:
        self._by_port[port] = peer

    def _remove(self, port: int) -> None:
        self._by_port.pop(port, None)


def _port_of(grpc_peer: str) -> int:
    _, _, port = grpc_peer.rpartition(":")
    return int(port) if port.isdigit() else -1


class TlsFront:
    def __init__(
        self,
        upstream_port: int,
        ssl_context: Callable[[], ssl.SSLContext],
        peers: PeerCertificates,
    ) -> None:
        self._upstream_port = upstream_port
        self._ssl_context = ssl_context
        self._peers = peers
        self._server: asyncio.Server | None = None
        self._current: ssl.SSLContext | None = None

    async def start(self, sock: socket.socket) -> None:
        """Accept on an already bound, listening socket."""
        base = self._ssl_context()
        self._current = base
        # The listening context stays; each handshake switches to the newest one as soon as
        # the ClientHello arrives (SNI or not), so a reload needs no restart and a root that
        # left the bundle stops being trusted (a context can gain roots but never lose them).
        base.sni_callback = self._choose_context
        self._server = await asyncio.start_server(
            self._serve, sock=sock, ssl=base, ssl_handshake_timeout=10
        )

    def reload(self) -> None:
        """New handshakes use a freshly built context (serving certificate, trusted roots);
        connections already open keep theirs."""
        self._current = self._ssl_context()

    def _choose_context(self, connection: ssl.SSLObject, server_name: str | None,
                        listening: ssl.SSLContext) -> None:
        current = self._current
        if current is not None and current is not listening:
            connection.context = current

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        client = writer.get_extra_info("peername")
        address = f"{client[0]}:{client[1]}" if client else "unknown"
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            writer.close()
            return
        # Registered before the first byte is piped, so the server never sees an unknown peer.
        local_port = int(up_writer.get_extra_info("sockname")[1])
        self._peers._add(local_port, Peer(address, der or None))
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._peers._remove(local_port)
            for w in (up_writer, writer):
                with contextlib.suppress(Exception):
                    w.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(_CHUNK):
            dst.write(data)
            await dst.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            dst.close()


def server_ssl_context(serving_file: str, password: bytes | None, bundle_pem: str,
                       alpn: tuple[str, ...] = ("h2",)) -> ssl.SSLContext:
    """`serving_file` holds the (encrypted) key and the certificate chain."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(serving_file, password=password)
    context.load_verify_locations(cadata=bundle_pem)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.set_alpn_protocols(list(alpn))
    return context
