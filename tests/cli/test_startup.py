"""Start-up that cannot hurt a running server, seen from outside: a second `meshca serve` on the
same data directory or ports stops before it writes anything, naming the address and the
meshca that holds it; a clean stop removes endpoints.json."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import MeshcaProcess, start_meshca


def _free_ports(n: int) -> list[int]:
    probes = [socket.socket() for _ in range(n)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(p.getsockname()[1]) for p in probes]
    finally:
        for probe in probes:
            probe.close()


def _snapshot(data_dir: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under the data directory but the database (which the running server itself
    writes): its modification time and content."""
    return {str(p.relative_to(data_dir)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(data_dir.rglob("*"))
            if p.is_file() and not p.name.startswith("meshca.db")}


def _serve(data_dir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshca", "serve", "--data-dir", str(data_dir),
                           *flags], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "MESHCA_WORKERS": "1"})


@pytest.fixture(scope="module")
def addresses() -> dict[str, str]:
    grpc, metrics, admin, authz = _free_ports(4)
    return {"--grpc-addr": f"127.0.0.1:{grpc}", "--metrics-addr": f"127.0.0.1:{metrics}",
            "--admin-addr": f"127.0.0.1:{admin}", "--ext-authz-addr": f"127.0.0.1:{authz}"}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory,
            addresses: dict[str, str]) -> Iterator[MeshcaProcess]:
    flags = [word for pair in addresses.items() for word in pair]
    server = start_meshca(tmp_path_factory.mktemp("first") / "data", *flags, "--workers", "2")
    yield server
    server.stop()


def test_a_second_server_on_the_same_data_dir_writes_nothing(running: MeshcaProcess,
                                                             addresses: dict[str, str]) -> None:
    before = _snapshot(running.data_dir)
    assert "tls/serving.pem" in before and "endpoints.json" in before
    flags = [word for pair in addresses.items() for word in pair]
    second = _serve(running.data_dir, *flags, "--workers", "2")
    assert second.returncode == 2  # a configuration only the operator can fix (cli/main.py)
    endpoints = running.data_dir / "endpoints.json"
    assert second.stderr.strip().splitlines()[-1] == (
        f"meshca: cannot start: address {addresses['--grpc-addr']} is in use "
        f"(meshca pid {running.process.pid} from {endpoints}?)")
    assert "Traceback" not in second.stderr
    assert _snapshot(running.data_dir) == before
    assert running.process.poll() is None


@pytest.mark.parametrize("taken", ["--metrics-addr", "--admin-addr", "--ext-authz-addr"])
def test_each_port_in_use_is_named(running: MeshcaProcess, addresses: dict[str, str],
                                   tmp_path: Path, taken: str) -> None:
    """Another data directory, only one address shared with the running server."""
    flags = ["--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--admin-addr",
             "127.0.0.1:0", "--ext-authz-addr", "127.0.0.1:0", taken, addresses[taken]]
    other = tmp_path / "other"
    second = _serve(other, *flags)
    assert second.returncode == 2  # a configuration only the operator can fix (cli/main.py)
    assert second.stderr.strip().splitlines()[-1] == (
        f"meshca: cannot start: address {addresses[taken]} is in use")
    assert not other.exists() or not any(other.iterdir())


def test_a_clean_stop_removes_endpoints_json(tmp_path: Path) -> None:
    server = start_meshca(tmp_path / "data")
    endpoints = server.data_dir / "endpoints.json"
    assert json.loads(endpoints.read_text())["pid"] == server.process.pid
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0
    assert not endpoints.exists()
    # Other files stay: the next start uses them.
    assert (server.data_dir / "root-cert.pem").exists()


def test_a_stale_endpoints_json_does_not_name_a_dead_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (data_dir / "endpoints.json").write_text(json.dumps({"pid": dead.pid}))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        started = time.monotonic()
        second = _serve(data_dir, "--grpc-addr", f"127.0.0.1:{port}")
    assert second.returncode == 2  # a configuration only the operator can fix (cli/main.py)
    assert second.stderr.strip().splitlines()[-1] == (
        f"meshca: cannot start: address 127.0.0.1:{port} is in use")
    assert time.monotonic() - started < 30
