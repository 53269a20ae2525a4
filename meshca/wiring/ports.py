"""Every listening port, taken before meshca touches its data directory: a second `meshca
serve` on the same directory (or the same ports) stops here, naming the address, before it
could rewrite the serving certificate or anything else under the server already running."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from meshca.config import ENDPOINTS_FILE, Settings, split_host_port
from meshca.errors import ConfigurationError
from meshca.transport.listen import listen_socket


@dataclass(frozen=True, slots=True)
class Ports:
    """Listening sockets for the supervisor's listeners (None: that listener is off)."""

    grpc: socket.socket
    metrics: socket.socket
    admin: socket.socket
    federation: socket.socket | None


def take_ports(settings: Settings, closing: contextlib.ExitStack | contextlib.AsyncExitStack,
               ) -> Ports:
    """Bind and listen on every configured address now; ConfigurationError names the first
    address in use. The sockets are closed when `closing` unwinds."""
    def take(addr: str, reuse_port: bool = False) -> socket.socket:
        host, port = split_host_port(addr)
        if reuse_port and port:
            # Sockets that share a port with SO_REUSEPORT also share it with a second meshca
            # doing the same: a plain bind first, so that a port in use is found.
            _probe(host, port, settings.data_dir)
        sock = _bind(host, port, reuse_port, settings.data_dir)
        closing.callback(sock.close)
        return sock

    ports = Ports(
        grpc=take(settings.grpc_addr, reuse_port=settings.workers > 1),
        metrics=take(settings.metrics_addr),
        admin=take(settings.admin_addr),
        federation=take(settings.federation_addr) if settings.federation_addr else None,
    )
    if settings.ext_authz_addr is not None:  # each worker binds it (SO_REUSEPORT): checked only
        host, port = split_host_port(settings.ext_authz_addr)
        if port:
            _probe(host, port, settings.data_dir)
    return ports


def _bind(host: str, port: int, reuse_port: bool, data_dir: Path) -> socket.socket:
    try:
        return listen_socket(host, port, reuse_port=reuse_port)
    except OSError as exc:
        raise _in_use(host, port, exc, data_dir) from None


def _probe(host: str, port: int, data_dir: Path) -> None:
    _bind(host, port, False, data_dir).close()


def _in_use(host: str, port: int, exc: OSError, data_dir: Path) -> OSError | ConfigurationError:
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return ConfigurationError(f"address {shown} is in use{_suspect(data_dir)}")
    return ConfigurationError(f"cannot listen on {shown}: {exc.strerror or exc}")


def _suspect(data_dir: Path) -> str:
    """Who probably holds it: the meshca whose endpoints.json is in this data directory."""
    path = data_dir / ENDPOINTS_FILE
    try:
        pid = int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ""
    except PermissionError:  # alive, someone else's
        pass
    return f" (meshca pid {pid} from {path}?)"


def remove_endpoints(data_dir: Path) -> None:
    """On a clean stop: endpoints.json goes, unless another process has written its own."""
    path = data_dir / ENDPOINTS_FILE
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass
