"""The agent's public Unix sockets (the Workload API's and SDS's), each serving gRPC with every
caller's kernel credentials bound to its connection.

grpc does not expose SO_PEERCRED, so the agent accepts the Unix connection itself (the same
`TlsListener`, in plaintext mode, with its connection limits), reads the credentials from the
accepted socket, and relays the bytes to the gRPC server's socket in a private directory from a
client socket bound to a fresh random name, exactly as `meshca/transport/tls_front.py` does for
TLS (docs/architecture.md, "Connections"). grpc reports that name as the call's peer and the
credentials are looked up by it; no other user can make a socket with a name the agent would
believe.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import struct
from collections.abc import Callable
from pathlib import Path

import grpc

from meshca.agent.ports import PeerCredentials
from meshca.core.connection_limits import ConnectionLimits
from meshca.transport.tls_front import ConnectionPeers, PrivateSocketDir, relay_connection
from meshca.transport.tls_listener import Connection, TlsListener, TlsPeer

_UCRED = struct.Struct("iII")  # struct ucred: pid_t pid; uid_t uid; gid_t gid


# Each relayed connection's kernel credentials, by the name grpc reports.
PeerRegistry = ConnectionPeers[PeerCredentials]

# Workload API and SDS streams are idle between renewals; the listener must not close them for
# that.
DEFAULT_LIMITS = ConnectionLimits(idle_timeout=24 * 3600.0, max_connections=4096,
                                  max_connections_per_source=4096)


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """The credentials the kernel recorded when the peer connected (not when it last wrote)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCredentials(pid=pid, uid=uid, gid=gid)


class UnixRelay:
    """A `TlsListener` handler: relays each accepted Unix connection to the private gRPC socket."""

    def __init__(self, sockets: PrivateSocketDir, peers: PeerRegistry) -> None:
        self._sockets = sockets
        self._peers = peers
        self.accepted = 0  # connections accepted so far (tests and metrics)

    def __call__(self, transport: asyncio.Transport, peer: TlsPeer,
                 connection: Connection) -> asyncio.Protocol:
        credentials = peer_credentials(transport.get_extra_info("socket"))
        self.accepted += 1
        return relay_connection(self._sockets, self._peers, credentials, connection)


def bind_public_socket(path: str) -> socket.socket:
    """A listening socket at `path` that every local user may connect to (0666), in a
    directory made 0755 if the agent creates it. A stale socket from a previous run is
    replaced; any other file in the way is an error."""
    target = Path(path)
    if not target.parent.exists():
        target.parent.mkdir(parents=True, mode=0o755)
        # mkdir's mode is filtered by the umask; workloads must be able to reach the socket.
        os.chmod(target.parent, 0o755)  # noqa: S103
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(target.lstat().st_mode):
            raise FileExistsError(f"{path} exists and is not a socket")
        target.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o666)  # noqa: S103 - every workload calls; attestation decides
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class UnixGrpcServer:
    """A gRPC server reached only through the public Unix socket `socket_path`: the agent
    accepts there, records each caller's credentials in `peers`, and relays to the gRPC
    server's socket in a private directory. `register` adds the servicers, given the server and
    the table they look callers up in."""

    def __init__(self, name: str, socket_path: str,
                 register: Callable[[grpc.aio.Server, PeerRegistry], None],
                 limits: ConnectionLimits = DEFAULT_LIMITS) -> None:
        self.name = name
        self.socket_path = socket_path
        self.peers = PeerRegistry()
        self.relay: UnixRelay | None = None
        self._register = register
        self._limits = limits
        self._sockets: PrivateSocketDir | None = None
        self._grpc: grpc.aio.Server | None = None
        self._listener: TlsListener | None = None

    async def start(self) -> None:
        self._sockets = PrivateSocketDir()
        self._grpc = grpc.aio.server()
        self._register(self._grpc, self.peers)
        if self._grpc.add_insecure_port(f"unix:{self._sockets.upstream}") == 0:
            raise OSError(f"cannot listen on {self._sockets.upstream}")
        await self._grpc.start()
        self.relay = UnixRelay(self._sockets, self.peers)
        self._listener = TlsListener(self.name, None, self.relay, self._limits)
        await self._listener.start(bind_public_socket(self.socket_path))

    async def stop(self, grace: float = 1.0) -> None:
        if self._listener is not None:
            await self._listener.stop()
        if self._grpc is not None:
            await self._grpc.stop(grace)
        if self._sockets is not None:
            self._sockets.remove()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
