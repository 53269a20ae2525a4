"""`meshca agent` in a subprocess, beside a real `meshca serve` (or any server at an address:
`start_agent_at`), as the end-to-end tests run it.

Sockets live in a directory every user can traverse (pytest's tmp_path is 0700), like the
DaemonSet's hostPath. The agent says where its health endpoint is in its "agent ready" line.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import MeshcaProcess

AGENT_ACCOUNT = ("kube-system", "meshca-agent")
TRUSTED_AGENT = ("--trusted-node-account", "/".join(AGENT_ACCOUNT))
_READY = re.compile(r"agent ready: .* health http://(\S+?),")
REPO = Path(__file__).resolve().parents[2]


def public_dir() -> Path:
    """A fresh 0755 directory under /tmp, removed by the caller."""
    path = Path(tempfile.mkdtemp(prefix="meshca-agent-", dir="/tmp"))
    path.chmod(0o755)
    return path


def agent_token_file(server: MeshcaProcess, directory: Path, ttl: int = 3600) -> Path:
    token = directory / "agent-token"
    token.write_text(server.token(*AGENT_ACCOUNT, ttl_seconds=ttl))
    token.chmod(0o600)
    return token


@dataclass
class AgentProcess:
    directory: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    health: str = ""
    args: list[str] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.directory / "agent.sock"

    @property
    def sds_socket(self) -> Path:
        return self.directory / "sds.sock"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, str]:
        host, _, port = self.health.rpartition(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def metric(self, name: str, **labels: str) -> float:
        _, text = self.get("/metrics")
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            if series == (f"{name}{{{wanted}}}" if labels else name):
                return float(value)
        raise AssertionError(f"no series {name}{labels} in:\n{text}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_agent(server: MeshcaProcess, directory: Path, *extra: str,
                token_file: Path | None = None, timeout: float = 30.0) -> AgentProcess:
    token = token_file or agent_token_file(server, directory)
    return start_agent_at(server.grpc_addr, server.data_dir / "root-cert.pem", token, directory,
                          *extra, timeout=timeout)


def start_agent_at(address: str, server_ca: Path, token: Path, directory: Path, *extra: str,
                   timeout: float = 30.0) -> AgentProcess:
    """An agent of the server at `address` (HOST:PORT, certificate for localhost under the PEM
    roots in `server_ca`), authenticating with the token in `token`."""
    log_path = directory / f"agent-{time.monotonic_ns()}.log"
    args = [sys.executable, "-m", "meshca", "agent",
            "--server", address, "--server-ca", str(server_ca),
            "--server-name", "localhost", "--token-file", str(token),
            "--socket", str(directory / "agent.sock"), "--sds-socket", str(directory / "sds.sock"),
            "--health-addr", "127.0.0.1:0", "--log-level", "DEBUG", *extra]
    with log_path.open("ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    agent = AgentProcess(directory, process, log_path, args=args)
    deadline = time.monotonic() + timeout
    while not (found := _READY.search(agent.log_text())):
        if process.poll() is not None:
            raise RuntimeError(f"meshca agent exited with {process.returncode}:\n{agent.log_text()}")
        if time.monotonic() > deadline:
            agent.stop()
            raise RuntimeError(f"meshca agent did not start:\n{agent.log_text()}")
        time.sleep(0.05)
    agent.health = found.group(1)
    return agent


def run_as_gid(gid: int) -> dict[str, object]:
    """subprocess keywords: the child keeps uid 0 but runs with only `gid` (the unix attestor
    tells it apart by gid; a non-root uid could not reach the virtualenv under /root)."""
    return {"group": gid, "extra_groups": []}


def workload_env(agent: AgentProcess) -> dict[str, str]:
    return {**os.environ, "SPIFFE_ENDPOINT_SOCKET": agent.endpoint, "PYTHONUNBUFFERED": "1"}


def cleanup(directory: Path, *running: AgentProcess | MeshcaProcess | None,
            children: Sequence[subprocess.Popen[str]] = ()) -> None:
    for child in children:
        child.kill()
        child.wait(5)
    for process in running:
        if process is not None:
            process.stop()
    shutil.rmtree(directory, ignore_errors=True)
