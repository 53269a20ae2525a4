"""Workers never outlive their supervisor (issue 12, item 4).

A real `meshca serve --workers 2` is stopped by SIGTERM or SIGINT at each stage of its
start-up, and killed with SIGKILL; afterwards no process of it may be left and every port it
had must be free for a server that does not share it (no SO_REUSEPORT). The supervision module
(pipes, parent-death watch) is also driven directly, through a parent process the test kills.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshca.infra.supervision import (
    ORPHAN_EXIT_CODE,
    WorkerLink,
    WorkerStartError,
    all_ready,
    one_line,
    worker_entry,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

REPO = Path(__file__).resolve().parents[2]
TREE_MARK = "MESHCA_TEST_TREE"


# ---- a server started without waiting for it ---------------------------------------------

@dataclass
class Server:
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    ports: dict[str, int]
    mark: str
    tmp: Path  # its $TMPDIR

    def private_dirs(self) -> list[Path]:
        """The workers' private socket directories (one per worker process)."""
        return sorted(self.tmp.glob("meshca-*"))

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def processes(self) -> list[int]:
        """Every live (not zombie) process of this server, found by an environment variable
        they all inherit: after the supervisor dies, its workers belong to another parent."""
        entry = f"{TREE_MARK}={self.mark}".encode()
        found = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if entry in environ.read_bytes().split(b"\0"):
                    found.append(int(environ.parent.name))
            except OSError:
                continue
        return found

    def workers(self) -> list[int]:
        return [pid for pid in self.processes() if b"spawn_main" in _cmdline(pid)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*extra: str, env: dict[str, str] | None = None) -> Server:
        data_dir = tmp_path / f"data{len(started)}"
        ports = {name: _free_port() for name in ("grpc", "admin", "metrics", "ext_authz")}
        mark = uuid.uuid4().hex
        log_path = tmp_path / f"server{len(started)}.log"
        # Short: a longer one would make meshca put its Unix sockets under /tmp instead.
        tmp = Path(tempfile.mkdtemp(prefix="mw-", dir="/tmp"))
        args = [sys.executable, "-m", "meshca", "serve", "--data-dir", str(data_dir),
                "--workers", "2", *extra]
        for name in ports:
            args += [f"--{name.replace('_', '-')}-addr", f"127.0.0.1:{ports[name]}"]
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO,
                                       start_new_session=True,  # its own group, as from a shell
                                       env={**os.environ, "PYTHONUNBUFFERED": "1", TREE_MARK: mark,
                                            "TMPDIR": str(tmp), **(env or {})})
        server = Server(process, data_dir, log_path, ports, mark, tmp)
        started.append(server)
        return server

    yield start
    for server in started:
        for pid in server.processes():
            os.kill(pid, signal.SIGKILL)
        server.process.wait(10)
        shutil.rmtree(server.tmp, ignore_errors=True)


def _until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def _loading(server: Server) -> bool:
    """Python is importing meshca's server (gRPC's extension is mapped), before `serve` runs."""
    try:
        return b"cygrpc" in Path(f"/proc/{server.process.pid}/maps").read_bytes()
    except OSError:
        return False


def _wait_for_stage(server: Server, stage: str) -> None:
    endpoints = server.data_dir / "endpoints.json"
    if stage == "launch":
        return
    if stage == "loading":
        _until(lambda: _loading(server) or server.log_path.stat().st_size, 30, "meshca to load")
    elif stage == "preparing":  # the first line comes from preparing the data dir and the CA
        _until(lambda: server.log_path.stat().st_size, 30, "the first log line")
    elif stage == "spawning":
        _until(server.workers, 30, "the worker process")
        assert not endpoints.exists(), "the test missed the stage: meshca is already serving"
    elif stage == "ready":
        _until(endpoints.exists, 60, "endpoints.json")
    assert server.process.poll() is None, server.log


def _port_free(port: int) -> bool:
    """A server that does not share ports can listen here: nothing else is listening."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen()
        except OSError:
            return False
    return True


def _assert_gone(server: Server, within: float) -> float:
    """Wait until no process of the server is left; return how long that took."""
    start = time.monotonic()
    _until(lambda: not server.processes(), within, f"every process of the server to end:\n{server.log}")
    elapsed = time.monotonic() - start
    for name, port in server.ports.items():
        assert _port_free(port), f"{name} port {port} is still taken"
    return elapsed


# Exit status once `serve` handles signals (the first log line onward): 0. Before that, while
# Python loads meshca, nothing is bound or spawned and a signal ends the process its default
# way (SIGTERM) or with 130 (SIGINT); at the very start Python itself may answer SIGINT with 1.
STOPPED = {
    "launch": {signal.SIGTERM: {-signal.SIGTERM}, signal.SIGINT: {-signal.SIGINT, 130, 1}},
    "loading": {signal.SIGTERM: {-signal.SIGTERM, 0}, signal.SIGINT: {130, 0}},
}


@pytest.mark.parametrize("stage", ["launch", "loading", "preparing", "spawning", "ready"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_at_any_start_up_stage_stops_everything(
        launch: Callable[..., Server], stage: str, sig: signal.Signals) -> None:
    server = launch()
    _wait_for_stage(server, stage)
    os.kill(server.process.pid, sig)
    # Generous: on a loaded machine an interpreter that is still importing can take a while to
    # unwind; what is asserted is that it ends, with nothing left behind.
    code = server.process.wait(90)
    _assert_gone(server, within=10)
    assert code in STOPPED.get(stage, {}).get(sig, {0}), (code, server.log)
    if stage == "launch" and sig == signal.SIGINT:
        return  # Python's own start-up, before any meshca code, may print KeyboardInterrupt
    assert "Traceback" not in server.log
    if stage in ("spawning", "ready"):
        assert f"{sig.name} received" in server.log


def test_a_stop_while_workers_start_ends_them_too(launch: Callable[..., Server]) -> None:
    """SIGTERM once the worker has started loading: it is terminated and reaped before the
    supervisor exits, not left to block on a dead parent."""
    server = launch()
    _wait_for_stage(server, "spawning")
    [worker] = server.workers()
    _until(lambda: b"cygrpc" in _maps(worker), 30, "the worker to load the server")
    os.kill(server.process.pid, signal.SIGTERM)
    assert server.process.wait(30) == 0
    _assert_gone(server, within=10)
    assert "meshca stopping before it finished starting" in server.log
    assert "Traceback" not in server.log


@pytest.mark.parametrize("stage", ["spawning", "ready"])
def test_ctrl_c_to_the_whole_process_group_stops_it_quietly(
        launch: Callable[..., Server], stage: str) -> None:
    """A terminal's Ctrl-C reaches the workers too, even one that is still loading Python."""
    server = launch()
    _wait_for_stage(server, stage)
    os.killpg(server.process.pid, signal.SIGINT)
    assert server.process.wait(30) == 0
    _assert_gone(server, within=10)
    assert "Traceback" not in server.log


def _maps(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/maps").read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize("stage", ["spawning", "ready"])
def test_workers_exit_within_a_second_of_a_killed_supervisor(
        launch: Callable[..., Server], stage: str) -> None:
    server = launch()
    _wait_for_stage(server, stage)
    assert server.workers()
    dirs = server.private_dirs()
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(10)
    elapsed = _assert_gone(server, within=10)
    assert elapsed <= 2.0, f"workers lingered {elapsed:.2f} s"
    if stage == "ready":
        assert f"supervisor (pid {server.process.pid}) is gone" in server.log
        # The worker removed its private socket directory; the killed supervisor could not.
        assert len(dirs) == 2 and len(server.private_dirs()) == 1, (dirs, server.private_dirs())


def test_a_worker_that_cannot_start_stops_the_server_with_one_line(
        launch: Callable[..., Server], tmp_path: Path) -> None:
    # Only the spawned worker (its command line says --multiprocessing-fork) fails to start.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys
        if "--multiprocessing-fork" in sys.argv:
            import meshca.wiring.worker as worker

            async def refuse(*args, **kwargs):
                raise RuntimeError("certificate log unavailable\\n(second line)")

            worker.start_worker = refuse
    """))
    path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    server = launch(env={"PYTHONPATH": path})
    assert server.process.wait(60) == 1
    _assert_gone(server, within=10)
    log = server.log
    assert "Traceback" not in log
    failure = [line for line in log.splitlines() if "certificate log unavailable" in line]
    assert failure == ["meshca: cannot start: meshca-worker-1 could not start: "
                       "RuntimeError: certificate log unavailable (second line)"], log


# ---- the supervision module on its own ---------------------------------------------------

def _spawn(target: str) -> WorkerLink:
    link = WorkerLink("test-worker")
    link.start(multiprocessing.get_context("spawn").Process(
        target=worker_entry, args=(link.worker_end, f"tests.security.worker_targets:{target}"),
        daemon=True))
    return link


def _readiness(target: str, timeout: float = 30, stop: asyncio.Event | None = None) -> bool:
    link = _spawn(target)
    try:
        return asyncio.run(all_ready([link], stop or asyncio.Event(), timeout))
    finally:
        link.close()  # a worker still running sees its lifeline close and leaves
        assert link.process is not None
        link.process.join(10)
        assert not link.process.is_alive()


def test_a_ready_worker_is_heard() -> None:
    assert _readiness("ready") is True


@pytest.mark.parametrize(("target", "timeout", "message"), [
    ("fail", 30, "test-worker could not start: cannot open the database File 'x.py', line 2"),
    ("die", 30, "test-worker exited with code 3 before it was ready"),
    ("silent", 0.5, "test-worker did not start within 0.5 s"),
])
def test_a_worker_that_does_not_start_is_named_with_why(target: str, timeout: float,
                                                        message: str) -> None:
    with pytest.raises(WorkerStartError) as raised:
        _readiness(target, timeout)
    assert str(raised.value) == message


def test_a_stop_ends_the_wait_for_workers() -> None:
    stop = asyncio.Event()
    stop.set()
    started = time.monotonic()
    assert _readiness("silent", stop=stop) is False
    assert time.monotonic() - started < 10


def test_reasons_are_one_short_line() -> None:
    assert one_line("a\n  b\tc ") == "a b c"
    assert len(one_line("x" * 5000)) == 500


PARENT = textwrap.dedent("""
    import asyncio, multiprocessing, sys
    from meshca.infra.supervision import WorkerLink, all_ready, worker_entry
    link = WorkerLink("test-worker")
    link.start(multiprocessing.get_context("spawn").Process(
        target=worker_entry, args=(link.worker_end, "tests.security.worker_targets:listen"),
        daemon=True))
    asyncio.run(all_ready([link], asyncio.Event(), 30))
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "close":
            link.close()
""")


@dataclass
class Family:
    parent: subprocess.Popen[str]
    worker: int
    port: int


@pytest.fixture
def family() -> Iterator[Family]:
    """A parent process (not pytest) with one worker that listens on a port."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=REPO, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert parent.stdout is not None
    _, pid, port = parent.stdout.readline().split()
    assert parent.stdout.readline().strip() == "ready"
    yield Family(parent, int(pid), int(port))
    if _alive(int(pid)):
        os.kill(int(pid), signal.SIGKILL)
    parent.kill()
    parent.wait(10)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_worker_leaves_when_its_parent_dies(family: Family, sig: signal.Signals) -> None:
    assert not _port_free(family.port)
    os.kill(family.parent.pid, sig)
    family.parent.wait(10)
    started = time.monotonic()
    _until(lambda: not _alive(family.worker), 5, "the worker to exit")
    assert time.monotonic() - started <= 2.0
    assert _port_free(family.port)


def test_a_closed_lifeline_alone_makes_a_worker_leave(family: Family) -> None:
    """The portable path: the parent lives on (so no parent-death signal), its pipe closes."""
    assert family.parent.stdin is not None
    family.parent.stdin.write("close\n")
    family.parent.stdin.flush()
    _until(lambda: not _alive(family.worker), 2, "the worker to exit")
    assert family.parent.poll() is None
    assert _port_free(family.port)


def test_a_stray_hangup_does_not_stop_a_worker_whose_parent_lives(family: Family) -> None:
    os.kill(family.worker, signal.SIGHUP)
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # the handler runs within milliseconds; give it time
        assert _alive(family.worker)
        time.sleep(0.05)
    assert not _port_free(family.port)


ARMED = textwrap.dedent("""
    import ctypes, os, sys
    from multiprocessing.connection import Pipe
    from meshca.infra.supervision import WorkerEnd
    report_reader, report = Pipe(duplex=False)
    lifeline, lifeline_writer = Pipe(duplex=False)
    WorkerEnd("test-worker", int(sys.argv[1]) or os.getppid(), report, lifeline).watch_parent()
    value = ctypes.c_int()
    ctypes.CDLL(None).prctl(2, ctypes.byref(value), 0, 0, 0)  # PR_GET_PDEATHSIG
    print(value.value, flush=True)
""")


def test_the_parent_death_signal_is_armed() -> None:
    result = subprocess.run([sys.executable, "-c", ARMED, "0"], cwd=REPO, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == signal.SIGHUP


def test_a_worker_whose_parent_is_already_gone_leaves_at_once() -> None:
    """The race the re-check closes: the parent died before the signal was armed."""
    result = subprocess.run([sys.executable, "-c", ARMED, str(2**22 + 1)], cwd=REPO,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == ORPHAN_EXIT_CODE
    assert result.stdout == ""
    assert "is gone (before the worker was tied to it)" in result.stderr


STOP_LISTENING = textwrap.dedent("""
    import socket
    from meshca.infra.supervision import stop_listening
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    stop_listening()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2)
        print("still listening")
    except ConnectionRefusedError:
        print("refused")
    client.sendall(b"ping")
    print(accepted.recv(4).decode())
""")


def test_stop_listening_closes_listeners_and_keeps_connections() -> None:
    result = subprocess.run([sys.executable, "-c", STOP_LISTENING], cwd=REPO, capture_output=True,
                            text=True, timeout=30)
    assert result.stdout.split() == ["refused", "ping"], result.stderr
