"""The soak (issue 17, item 3), shared by scripts/soak and tests/crash/test_soak.py (which runs
only when asked: MESHCA_SOAK_MINUTES).

Mixed load against one server for N minutes: issuance by token, renewal by certificate (mTLS,
no token), admin reads, ext_authz checks, policy edits, and an intermediate rotation every few
minutes (prepare, then activate); beside it, idle TLS connections and slow clients (one byte of
a TLS hello a second) up to the connection limit. Each minute, for every process of the server
(supervisor and workers): RSS, open file descriptors, threads and database connections. At the
end, a least-squares slope per series after a warm-up fifth of the run: its growth over the run
must stay within the noise (three standard deviations of the residuals, plus one unit: 4 KiB of
RSS, one fd, thread or connection)."""

from __future__ import annotations

import itertools
import json
import os
import socket
import statistics
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization
from envoy.service.auth.v3 import external_auth_pb2_grpc

from tests.fuzz.ext_authz_campaign import POLICIES
from tests.integration.authz_envoy import check_request
from tests.support import AdminClient, MeshcaProcess, admin_token, csr_pem, ec_key, start_meshca

MAX_CONNECTIONS = 128
# One load generator stands for many pods: the per-identity and per-source issuance limits (which
# tests/security measures) would refuse it, so they are off; the connection limits stay on.
SERVER_FLAGS = ("--workers", "2", "--issuance-rate-per-identity", "off",
                "--issuance-rate-per-source", "off", "--max-connections", str(MAX_CONNECTIONS),
                "--max-connections-per-source", str(MAX_CONNECTIONS), "--admin-auth-failures", "1000000")
SLOW = 16  # clients that send a TLS hello one byte a second
# Idle TLS connections held open (re-opened when the server closes them): with the slow ones and
# the load's own few (one issuing channel, one renewing), the gRPC listener runs near its limit.
IDLE = MAX_CONNECTIONS - SLOW - 8
ROTATE_EVERY = 180.0  # seconds between intermediate rotations


# ---- what each process holds ------------------------------------------------------------

def _socket_peers() -> dict[str, int]:
    """socket inode → remote port, for every TCP socket of the machine."""
    peers = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            peers[fields[9]] = int(fields[2].rsplit(":", 1)[1], 16)
    return peers


def process_sample(pid: int, database_port: int | None, peers: dict[str, int]) -> dict[str, int]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":" in line)
    targets = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:
            continue
    if database_port is None:  # SQLite: open handles on the database and its WAL
        database = sum(1 for t in targets if "meshca.db" in t)
    else:
        database = sum(1 for t in targets if t.startswith("socket:[")
                       and peers.get(t[8:-1]) == database_port)
    return {"rss_kib": int(status["VmRSS"].split()[0]), "fds": len(targets),
            "threads": int(status["Threads"]), "db": database}


def gen2_collections(server: MeshcaProcess) -> int | None:
    """The supervisor's full (generation 2) garbage collections so far, from its /metrics; the
    soak sets them beside its RSS to tell Python's collector from a leak."""
    try:
        with urllib.request.urlopen(f"http://{server.metrics_addr}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith('python_gc_collections_total{generation="2"} '):
            return int(float(line.rsplit(" ", 1)[1]))
    return None


def server_processes(server: MeshcaProcess) -> dict[str, int]:
    """name → pid: the supervisor, and each spawned worker (its children that run spawn_main)."""
    found = {"supervisor": server.process.pid}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == server.process.pid and b"spawn_main" in cmdline:
            found[f"worker-{len(found)}"] = int(entry.name)
    return found


# ---- the load ----------------------------------------------------------------------------

@dataclass
class Load:
    server: MeshcaProcess
    requests: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _count(self, kind: str, failure: str | None = None) -> None:
        with self._lock:
            self.requests[kind] += 1
            if failure is not None:
                self.failures[kind] += 1
                if len(self.examples) < 20:
                    self.examples.append(f"{kind}: {failure}")

    def _loop(self, kind: str, call: Callable[[], None], pause: float) -> None:
        while not self.stop.is_set():
            try:
                call()
                self._count(kind)
            except (grpc.RpcError, OSError, AssertionError, ValueError) as exc:
                self._count(kind, f"{type(exc).__name__}: {str(exc)[:300]}")
            self.stop.wait(pause)

    def threads(self) -> list[threading.Thread]:
        server = self.server
        key = ec_key()
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        tokens: dict[str, tuple[float, str]] = {}

        def token(account: str) -> str:
            made, value = tokens.get(account, (0.0, ""))
            if time.monotonic() - made > 300:  # well inside the token's 600 s
                value = server.token("soak", account)
                tokens[account] = (time.monotonic(), value)
            return value

        held: dict[str, bytes] = {}

        def issue() -> None:
            chain = server.create_certificate(csr_pem(key), token=token("web"))
            held["chain"] = "".join(chain[:-1]).encode()

        def renew() -> None:
            if "chain" not in held:
                return
            channel = server.channel(held["chain"], key_pem)
            try:
                chain = server.create_certificate(csr_pem(key), metadata=[], channel=channel)
            finally:
                channel.close()
            held["chain"] = "".join(chain[:-1]).encode()

        admin = AdminClient(server)

        def read() -> None:
            for path in ("/v1/ca", "/v1/certificates?limit=20", "/v1/audit?limit=20", "/v1/bundle"):
                answer = admin.get(path, token=admin_token(server))
                assert answer.status == 200, (path, answer.status, answer.body[:200])

        edits = [0]

        def edit() -> None:
            policy = json.loads(json.dumps(POLICIES[edits[0] % len(POLICIES)]))
            policy["metadata"]["name"] = f"soak-{edits[0] % 5}"
            edits[0] += 1
            meta = policy["metadata"]
            answer = admin.request("PUT", f"/v1/authz/policies/{meta['namespace']}/{meta['name']}",
                                   token=admin_token(server), json_body=policy)
            assert answer.status in (200, 201), answer.body[:300]

        ext_addr = json.loads((server.data_dir / "endpoints.json").read_text())["ext_authz"]
        ext_channel = grpc.insecure_channel(ext_addr)
        ext_stub = external_auth_pb2_grpc.AuthorizationStub(ext_channel)
        check = check_request({
            "source": {"principal": "spiffe://cluster.local/ns/web/sa/a", "ip": "10.0.0.1"},
            "destination": {"namespace": "shop", "labels": {"app": "cart"}, "port": 80},
            "http": {"method": "GET", "path": "/a/b", "host": "h", "headers": {}}})

        def authorize() -> None:
            response = ext_stub.Check(check, timeout=30)
            assert response.status.code in (0, 7), response.status

        def rotate() -> None:
            prepared = admin.post("/v1/ca:prepare", {"kind": "intermediate"}, token=admin_token(server))
            assert prepared.status == 201, prepared.body[:300]
            activated = admin.post("/v1/ca:activate", {"kind": "intermediate", "waive_publish_lead": True},
                                   token=admin_token(server))
            assert activated.status == 200, activated.body[:300]

        plan = [("issue", issue, 0.05), ("issue", issue, 0.05), ("renew", renew, 0.2),
                ("admin read", read, 0.5), ("ext_authz", authorize, 0.01), ("policy edit", edit, 5.0),
                ("rotation", rotate, ROTATE_EVERY)]
        made = [threading.Thread(target=self._loop, args=spec, daemon=True) for spec in plan]
        made += [threading.Thread(target=self._idle, args=(i,), daemon=True) for i in range(IDLE)]
        made += [threading.Thread(target=self._slow, daemon=True) for _ in range(SLOW)]
        return made

    def _idle(self, index: int) -> None:
        """Hold one TLS connection open and idle; when the server closes it (idle timeout),
        open another: the connection count stays at its share of the limit."""
        import ssl

        host, _, port = self.server.grpc_addr.rpartition(":")
        context = ssl.create_default_context(cadata=self.server.bundle_pem.decode())
        context.set_alpn_protocols(["h2"])
        while not self.stop.is_set():
            try:
                with socket.create_connection((host, int(port)), timeout=10) as raw, \
                        context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.settimeout(1)
                    while not self.stop.is_set():
                        try:
                            if not tls.recv(4096):
                                break
                        except TimeoutError:
                            continue
            except OSError:
                pass
            self.stop.wait(0.5)

    def _slow(self) -> None:
        host, _, port = self.server.grpc_addr.rpartition(":")
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64
        while not self.stop.is_set():
            try:
                with socket.create_connection((host, int(port)), timeout=10) as raw:
                    for byte in hello:
                        raw.sendall(bytes([byte]))
                        if self.stop.wait(1.0):
                            break
            except OSError:
                pass
            self.stop.wait(0.5)


# ---- the run -----------------------------------------------------------------------------

def slope(values: list[float]) -> tuple[float, float]:
    """(least-squares slope per sample, standard deviation of the residuals)."""
    n = len(values)
    xs = list(range(n))
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(values)
    sxx = sum((x - mean_x) ** 2 for x in xs) or 1.0
    b = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, values, strict=True)) / sxx
    residuals = [y - (mean_y + b * (x - mean_x)) for x, y in zip(xs, values, strict=True)]
    return b, statistics.pstdev(residuals)


UNIT = {"rss_kib": 4.0, "fds": 1.0, "threads": 1.0, "db": 1.0}


@dataclass
class SoakReport:
    minutes: float
    samples: dict[str, list[dict[str, int]]]
    requests: Counter[str]
    failures: Counter[str]
    examples: list[str]
    traceback_logs: list[str]

    def trends(self) -> dict[str, dict[str, tuple[float, float, bool]]]:
        """process → series → (growth over the run by the fitted slope, noise bound, within)."""
        found: dict[str, dict[str, tuple[float, float, bool]]] = {}
        for process, rows in self.samples.items():
            rows = rows[max(1, len(rows) // 5):]  # warm-up, a fifth of the run: caches and pools fill
            if len(rows) < 3:
                continue
            found[process] = {}
            for series in ("rss_kib", "fds", "threads", "db"):
                b, noise = slope([float(r[series]) for r in rows])
                growth = b * (len(rows) - 1)
                bound = 3 * noise + UNIT[series]
                found[process][series] = (growth, bound, growth <= bound)
        return found

    def rss_falls(self, process: str = "supervisor",
                  least_kib: int = 8192) -> tuple[list[tuple[int, int, int]], int]:
        """([(minute, KiB fallen, gen-2 collections in that minute)] for each fall of RSS by at
        least `least_kib`, gen-2 collections in all the other minutes)."""
        rows = [r for r in self.samples.get(process, []) if "gc2" in r]
        falls, elsewhere = [], 0
        for minute, (before, after) in enumerate(itertools.pairwise(rows), start=1):
            collections = after["gc2"] - before["gc2"]
            fallen = before["rss_kib"] - after["rss_kib"]
            if fallen >= least_kib:
                falls.append((minute, fallen, collections))
            else:
                elsewhere += collections
        return falls, elsewhere

    def problems(self) -> list[str]:
        found = [f"{count} failed {kind} requests" for kind, count in self.failures.items()]
        for process, series in self.trends().items():
            found += [f"{process} {name} grows {growth:.1f} over the run (noise bound {bound:.1f})"
                      for name, (growth, bound, within) in series.items() if not within]
        found += [f"traceback in {path}" for path in self.traceback_logs]
        return found

    def render(self) -> str:
        lines = [f"== soak: {self.minutes:g} min, {sum(self.requests.values())} requests, "
                 f"{sum(self.failures.values())} failed: {dict(self.requests)}"]
        for process, rows in self.samples.items():
            lines.append(f"   {process}: " + "  ".join(
                f"{series} {rows[0][series]}->{rows[-1][series]}" for series in rows[0]))
        for process, series in self.trends().items():
            lines.append(f"   {process} fitted growth over the run: " + ", ".join(
                f"{name} {growth:+.1f} (bound {bound:.1f}{'' if ok else ' EXCEEDED'})"
                for name, (growth, bound, ok) in series.items()))
        falls, elsewhere = self.rss_falls()
        if falls:
            lines.append("   supervisor RSS falls of 8 MiB or more: " + ", ".join(
                f"minute {m} (-{kib / 1024:.0f} MiB, {n} gen-2 collections)" for m, kib, n in falls)
                + f"; gen-2 collections in the other minutes: {elsewhere}")
        lines += [f"   PROBLEM {p}" for p in self.problems()]
        lines += [f"   e.g. {e}" for e in self.examples[:5]]
        return "\n".join(lines)


def run_soak(root: Path, minutes: float, *, database_url: str | None = None,
             sample_every: float = 60.0, log: Callable[[str], None] = print) -> SoakReport:
    from tests.support import logs_with_tracebacks

    server = start_meshca(root / "data", *SERVER_FLAGS, database_url=database_url)
    database_port = None
    if database_url:
        database_port = int(database_url.split("@", 1)[-1].split("/", 1)[0].rsplit(":", 1)[1])
    load = Load(server)
    samples: dict[str, list[dict[str, int]]] = {}
    try:
        for policy in POLICIES:
            meta = policy["metadata"]
            AdminClient(server).request("PUT", f"/v1/authz/policies/{meta['namespace']}/{meta['name']}",
                                        token=admin_token(server), json_body=policy)
        threads = load.threads()
        for thread in threads:
            thread.start()
        started = time.monotonic()
        while True:
            peers = _socket_peers()
            for name, pid in server_processes(server).items():
                try:
                    samples.setdefault(name, []).append(process_sample(pid, database_port, peers))
                except OSError:
                    continue
            full = gen2_collections(server)
            if full is not None and "supervisor" in samples:
                samples["supervisor"][-1]["gc2"] = full
            elapsed = time.monotonic() - started
            log(f"   minute {elapsed / 60:5.1f}: {sum(load.requests.values())} requests, "
                f"{sum(load.failures.values())} failed; " + "; ".join(
                    f"{n} {rows[-1]}" for n, rows in samples.items()))
            if elapsed >= minutes * 60:
                break
            time.sleep(min(sample_every, max(0.0, minutes * 60 - elapsed)))
        load.stop.set()
        for thread in threads:
            thread.join(15)
    finally:
        load.stop.set()
        server.stop()
    return SoakReport(minutes, samples, load.requests, load.failures, load.examples,
                      [str(p) for p in logs_with_tracebacks(root)])

