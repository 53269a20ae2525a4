"""The crash campaign (issue 17, item 2), shared by tests/crash/ (a few kills) and
scripts/crash-test (a hundred): steady issuance from several clients that record every
certificate they receive, while meshca is stopped at random moments (SIGKILL mostly, SIGTERM and
SIGINT too), restarted each time on the same data and the same ports.

After each stop: no process of the server's tree is left (its workers die with their
supervisor), every port it had can be bound again, and the restarted server issues within
`serving_within` seconds. At the end: every serial a client received is recorded exactly once,
no two clients received the same serial, each record names the identity of the client that
asked, the CA journal is consistent and every key opens (test_ca_replicas._check_journal)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from sqlalchemy import select

from meshca.infra.db.engine import open_engine
from meshca.infra.db.schema import issued_certificates
from tests.support import MeshcaProcess, csr_pem, logs_with_tracebacks, start_meshca

TREE_MARK = "MESHCA_CRASH_TREE"
NO_LIMITS = ("--issuance-rate-per-identity", "off", "--issuance-rate-per-source", "off")
# Intermediates that rotate every few seconds, so that kills land in the middle of rotation
# steps (prepare, publish, activate, retire) as well as of issuance. The root lives an hour: a
# campaign is shorter, so no root expires in the middle of it.
ROTATING = ("--root-ttl", "1h", "--intermediate-ttl", "12s", "--max-ttl", "2s", "--default-ttl", "2s",
            "--bundle-publish-lead", "1s", "--bundle-refresh-hint", "0.5s", "--rotation-skew", "1s",
            "--ca-reload-interval", "0.5s")
STOPS = (signal.SIGKILL,) * 8 + (signal.SIGTERM, signal.SIGINT)
SERVING_WITHIN = 5.0  # seconds from the restart's spawn to its first certificate, on an idle machine


def load_factor() -> float:
    """Runnable processes per core over the last minute, at least 1: on a machine shared by
    other work a restart takes that much longer, and the bound scales with it (the campaign
    reports the load with its figures)."""
    return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Bindable by a server that does not share it (SO_REUSEADDR, as servers set, but not
    SO_REUSEPORT): false while any socket still listens there."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def tree(mark: str) -> list[int]:
    """Live processes carrying the server's mark in their environment (workers included,
    whoever their parent is now)."""
    entry = f"{TREE_MARK}={mark}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if entry in environ.read_bytes().split(b"\0"):
                stat = (environ.parent / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(environ.parent.name))
        except (OSError, IndexError):
            continue
    return found


@dataclass
class Received:
    client: int
    identity: str
    serial: int


@dataclass
class Clients:
    """Threads that issue as fast as the server lets them, one identity each, recording every
    certificate received; errors are counted by code (UNAVAILABLE is expected around stops)."""

    server: Callable[[], MeshcaProcess]
    count: int = 4
    received: list[Received] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for index in range(self.count):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def oks(self) -> int:
        with self._lock:
            return len(self.received)

    def _run(self, index: int) -> None:
        namespace, account = "crash", f"client-{index}"
        identity = f"spiffe://cluster.local/ns/{namespace}/sa/{account}"
        csr = csr_pem()
        tokens: dict[int, str] = {}  # per server process: reading the issuer key per call is slow
        while not self._stop.is_set():
            server = self.server()
            try:
                token = tokens.get(id(server)) or \
                    tokens.setdefault(id(server), server.token(namespace, account))
                chain = server.create_certificate(csr, token=token)
            except grpc.RpcError as exc:
                with self._lock:
                    self.errors[exc.code().name] += 1
                time.sleep(0.05)
                continue
            except (OSError, ValueError, RuntimeError):  # the server's files mid-restart
                time.sleep(0.05)
                continue
            serial = x509.load_pem_x509_certificate(chain[0].encode()).serial_number
            with self._lock:
                self.received.append(Received(index, identity, serial))


@dataclass
class CycleResult:
    stop: str
    ran_for: float
    oks_before: int
    exit_code: int | None
    tree_gone_after: float
    ports_free: bool
    serving_after: float
    load: float  # load_factor() when the restart was measured


@dataclass
class Campaign:
    """One server configuration, stopped `cycles` times."""

    root: Path
    name: str
    workers: int = 1
    database_url: str | None = None
    rotating: bool = False
    clients: int = 4
    serving_within: float = SERVING_WITHIN
    start_within: float = 60.0  # a restart that has not issued by then never will (recorded)
    rng: random.Random = field(default_factory=lambda: random.Random(20261206))
    results: list[CycleResult] = field(default_factory=list)
    start_failure: str = ""  # why a restart never issued, if one did not
    _current: MeshcaProcess | None = None

    def __post_init__(self) -> None:
        self.ports = {name: free_port() for name in ("grpc", "admin", "metrics", "ext_authz")}
        self.mark = uuid.uuid4().hex
        self.data = self.root / self.name

    def _flags(self) -> list[str]:
        flags = ["--workers", str(self.workers), *NO_LIMITS, *(ROTATING if self.rotating else ())]
        for name, port in self.ports.items():
            flags += [f"--{name.replace('_', '-')}-addr", f"127.0.0.1:{port}"]
        return flags

    def _start(self) -> tuple[MeshcaProcess, float]:
        """Start, and wait until the server has issued once: (server, seconds from spawn)."""
        started = time.monotonic()
        server = _start_marked(self.data, self._flags(), self.database_url, self.mark)
        self._current = server
        csr = csr_pem()
        while True:
            try:
                server.create_certificate(csr, token=server.token("crash", "probe"))
                return server, time.monotonic() - started
            except grpc.RpcError:
                if time.monotonic() - started > self.start_within:
                    raise
                time.sleep(0.02)

    def server(self) -> MeshcaProcess:
        assert self._current is not None
        return self._current

    def run(self, cycles: int, on_cycle: Callable[[CycleResult], None] | None = None) -> Clients:
        server, _ = self._start()
        clients = Clients(self.server, self.clients)
        clients.start()
        try:
            for _ in range(cycles):
                ran_for = self.rng.uniform(0.2, 3.0)
                time.sleep(ran_for)
                stop = self.rng.choice(STOPS)
                oks = clients.oks()
                exit_code = self._stop_server(server, stop)
                gone_at = time.monotonic()
                deadline = gone_at + 10
                while tree(self.mark) and time.monotonic() < deadline:
                    time.sleep(0.02)
                leftover = tree(self.mark)
                tree_gone_after = time.monotonic() - gone_at
                for pid in leftover:  # recorded as a failure below; cleaned so the next cycle runs
                    os.kill(pid, signal.SIGKILL)
                ports_free = all(port_is_free(port) for port in self.ports.values())
                try:
                    server, serving_after = self._start()
                except (grpc.RpcError, RuntimeError) as exc:  # recorded; the campaign stops here
                    self.start_failure = f"{type(exc).__name__}: {str(exc)[:400]}"
                    serving_after = float("inf")
                result = CycleResult(stop.name, ran_for, oks, exit_code,
                                     tree_gone_after if not leftover else float("inf"),
                                     ports_free, serving_after, load_factor())
                self.results.append(result)
                if on_cycle is not None:
                    on_cycle(result)
                if self.start_failure:
                    break
            time.sleep(0.5)
        finally:
            clients.stop()
            self.server().stop()
            for pid in tree(self.mark):
                os.kill(pid, signal.SIGKILL)
        return clients

    def _stop_server(self, server: MeshcaProcess, stop: signal.Signals) -> int | None:
        server.process.send_signal(stop)
        try:
            return server.process.wait(30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(10)
            return None

    def problems(self, clients: Clients) -> list[str]:
        """Everything the campaign promises, checked; [] when all holds."""
        found: list[str] = [f"a restart never issued: {self.start_failure}"] if self.start_failure else []
        for index, result in enumerate(self.results):
            if result.tree_gone_after == float("inf"):
                found.append(f"cycle {index}: a process outlived the {result.stop}")
            if not result.ports_free:
                found.append(f"cycle {index}: a port stayed bound after {result.stop}")
            if result.stop != "SIGKILL" and result.exit_code != 0:
                found.append(f"cycle {index}: {result.stop} ended with exit code {result.exit_code}")
            if result.serving_after > self.serving_within * result.load:
                found.append(f"cycle {index}: serving again after {result.serving_after:.1f} s "
                             f"(> {self.serving_within} s x load {result.load:.1f})")
        serials = [r.serial for r in clients.received]
        duplicates = [s for s, n in Counter(serials).items() if n > 1]
        if duplicates:
            found.append(f"{len(duplicates)} serials received twice, e.g. {duplicates[:3]}")
        url = self.database_url or f"sqlite:///{self.data / 'meshca.db'}"
        engine = open_engine(url)
        try:
            with engine.connect() as connection:
                rows = {int(serial, 16): spiffe_id for serial, spiffe_id in connection.execute(
                    select(issued_certificates.c.serial, issued_certificates.c.spiffe_id))}
        finally:
            engine.dispose()
        missing = [r for r in clients.received if r.serial not in rows]
        if missing:
            found.append(f"{len(missing)} received certificates are not recorded, e.g. {missing[:3]}")
        wrong = [r for r in clients.received if r.serial in rows and rows[r.serial] != r.identity]
        if wrong:
            found.append(f"{len(wrong)} records name another identity, e.g. {wrong[:3]}")
        try:
            from tests.integration.test_ca_replicas import _check_journal

            _check_journal(self.server(), self.data)
        except AssertionError as exc:
            found.append(f"journal inconsistent: {exc}")
        tracebacks = logs_with_tracebacks(self.root) if self.root.exists() else {}
        found += [f"traceback in {path}" for path in tracebacks]
        return found


def _start_marked(data: Path, flags: list[str], database_url: str | None, mark: str) -> MeshcaProcess:
    # The fixed --*-addr flags come after start_meshca's own ephemeral ones: the last one wins.
    return start_meshca(data, *flags, database_url=database_url, env={TREE_MARK: mark})
