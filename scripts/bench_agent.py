"""scripts/bench-agent: what the node agent costs a workload, against the server it fronts.

Starts `meshca serve` and `meshca agent` (unix attestor) on loopback and a Unix socket, then in
one command:

1. **served from cache**: P client processes x T threads each open `FetchX509SVID` with the
   unmodified SPIFFE client's stub, read the first response and close, for D seconds. Every call
   is attested; the SVID comes from the agent's cache.
2. **baseline**: the same processes and threads call the server's `CreateCertificate` directly
   (a fresh P-256 key and CSR, a bearer token), as a workload without the agent must.
3. **first fetch**: N workloads, each with an identity the agent has not seen (its own gid),
   K at a time, time one `FetchX509SVID` each: attestation, key, signing by the server.

It prints rates and latencies, and the ratios of (1) and (3) to (2).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TD = "cluster.local"
AGENT = ("kube-system", "meshca-agent")
HEADER = (("workload.spiffe.io", "true"),)
FIRST_GID = 30000
_READY = re.compile(r"agent ready: ")


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# ---- load generators (each in its own process) -------------------------------------------------

def _fetch_once(stub: object, timeout: float = 30.0) -> None:
    from spiffe._proto import workload_pb2

    stream = stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), metadata=HEADER,  # type: ignore[attr-defined]
                                timeout=timeout)
    response = next(iter(stream))
    stream.cancel()
    if not response.svids:
        raise RuntimeError("an empty X509SVIDResponse")


def _agent_worker(socket_path: str, threads: int, seconds: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    import grpc
    from spiffe._proto import workload_pb2_grpc

    channel = grpc.insecure_channel(f"unix:{socket_path}")
    stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)  # type: ignore[no-untyped-call]
    _fetch_once(stub)  # warm: the identity is cached and the connection open
    out.put(_run_threads(threads, seconds, lambda: _fetch_once(stub)))


def _direct_worker(address: str, bundle: bytes, token: str, threads: int, seconds: float,
                   out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    import grpc
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding

    from meshca.gen.istio.v1.auth import ca_pb2, ca_pb2_grpc

    channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(bundle),
                                  options=[("grpc.ssl_target_name_override", "localhost")])
    stub = ca_pb2_grpc.IstioCertificateServiceStub(channel)
    metadata = (("authorization", f"Bearer {token}"),)

    def issue() -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(
                f"spiffe://{TD}/ns/bench/sa/load")]), critical=False).sign(key, hashes.SHA256())
        stub.CreateCertificate(ca_pb2.IstioCertificateRequest(
            csr=csr.public_bytes(Encoding.PEM).decode()), metadata=metadata, timeout=30)

    issue()
    out.put(_run_threads(threads, seconds, issue))


def _run_threads(threads: int, seconds: float, call: Callable[[], None]) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop() -> None:
        mine = []
        while time.monotonic() < deadline:
            started = time.perf_counter()
            call()
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return latencies


def _first_fetch(socket_path: str) -> None:
    """Run as a child with a gid of its own: one first fetch, timed inside the process."""
    import grpc
    from spiffe._proto import workload_pb2_grpc

    channel = grpc.insecure_channel(f"unix:{socket_path}")
    grpc.channel_ready_future(channel).result(timeout=30)
    stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)  # type: ignore[no-untyped-call]
    started = time.perf_counter()
    _fetch_once(stub)
    print(json.dumps({"seconds": time.perf_counter() - started}))


# ---- the processes under test ------------------------------------------------------------------

class Bench:
    def __init__(self, work: Path, identities: int) -> None:
        self.work = work
        self.identities = identities
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        data = self.work / "data"
        args = [sys.executable, "-m", "meshca", "serve", "--data-dir", str(data),
                "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0",
                "--admin-addr", "127.0.0.1:0", "--ext-authz-addr", "127.0.0.1:0",
                "--workers", str(os.cpu_count() or 1), "--trusted-node-account", "/".join(AGENT),
                "--issuance-rate-per-identity", "off", "--issuance-rate-per-source", "off"]
        self.procs.append(subprocess.Popen(args, stdout=(self.work / "server.log").open("wb"),
                                           stderr=subprocess.STDOUT, cwd=ROOT))
        endpoints = data / "endpoints.json"
        _wait(lambda: endpoints.exists(), "meshca serve", self.work / "server.log", self.procs[0])
        self.grpc_addr = json.loads(endpoints.read_text())["grpc"]
        self.bundle = (data / "root-cert.pem").read_bytes()
        self.token = self._dev_token("bench", "load")
        token_file = self.work / "agent-token"
        token_file.write_text(self._dev_token(*AGENT))
        token_file.chmod(0o600)
        sockets = self.work / "sockets"
        sockets.mkdir(mode=0o755)
        self.socket = str(sockets / "agent.sock")
        entries = [f"load=uid:{os.getuid()},gid:{os.getgid()}=spiffe://{TD}/ns/bench/sa/agent-load"]
        entries += [f"w{i}=uid:{os.getuid()},gid:{FIRST_GID + i}=spiffe://{TD}/ns/bench/sa/w{i}"
                    for i in range(self.identities)]
        agent = [sys.executable, "-m", "meshca", "agent", "--attestor", "unix",
                 "--server", self.grpc_addr, "--server-ca", str(data / "root-cert.pem"),
                 "--server-name", "localhost", "--token-file", str(token_file),
                 "--socket", self.socket, "--sds-socket", "off", "--health-addr", "off",
                 "--log-level", "WARNING"]
        for entry in entries:
            agent += ["--workload", entry]
        log = self.work / "agent.log"
        self.procs.append(subprocess.Popen(agent, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                           cwd=ROOT, env={**os.environ, "MESHCA_LOG_LEVEL": "INFO"}))
        _wait(lambda: os.path.exists(self.socket), "meshca agent", log, self.procs[1])

    def _dev_token(self, namespace: str, account: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "meshca", "dev", "token", "--data-dir", str(self.work / "data"),
             "--namespace", namespace, "--service-account", account, "--ttl", "2h"],
            cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait(ready: Callable[[], bool], what: str, log: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"bench-agent: {what} did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)


def _load(target: Callable[..., None], args: tuple[object, ...], processes: int) -> list[float]:
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=target, args=(*args, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    latencies: list[float] = []
    for _ in procs:
        latencies.extend(out.get(timeout=600))
    for p in procs:
        p.join(30)
    return latencies


def _first_fetches(socket: str, identities: int, at_once: int) -> list[float]:
    def one(i: int) -> float:
        done = subprocess.run([sys.executable, __file__, "first-fetch", socket], cwd=ROOT,
                              capture_output=True, text=True, timeout=120, group=FIRST_GID + i,
                              extra_groups=[], check=False)
        if done.returncode != 0:
            sys.exit(f"bench-agent: a first fetch failed:\n{done.stderr}")
        return float(json.loads(done.stdout)["seconds"])

    with ThreadPoolExecutor(at_once) as pool:
        return list(pool.map(one, range(identities)))


def _line(name: str, latencies: list[float], seconds: float | None) -> str:
    rate = f"{len(latencies) / seconds:10,.0f}/s" if seconds else " " * 12
    return (f"  {name:<44} {rate} p50 {quantile(latencies, 0.5) * 1e3:7.2f} ms"
            f"  p99 {quantile(latencies, 0.99) * 1e3:7.2f} ms  (n={len(latencies):,})")


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-agent")
    parser.add_argument("-p", "--processes", type=int, default=4, help="client processes (4)")
    parser.add_argument("-t", "--threads", type=int, default=8, help="threads per process (8)")
    parser.add_argument("-d", "--seconds", type=float, default=10.0, help="seconds per phase (10)")
    parser.add_argument("-n", "--identities", type=int, default=64,
                        help="first fetches, one new identity each (64)")
    parser.add_argument("-k", "--at-once", type=int, default=8, help="first fetches at once (8)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench-agent: the first-fetch phase gives each workload its own gid: run as root")
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-agent-", dir="/tmp"))
    work.chmod(0o755)
    bench = Bench(work, args.identities)
    try:
        bench.start()
        clients = f"{args.processes} processes x {args.threads} threads"
        print(f"bench-agent: nproc={os.cpu_count()}; server --workers {os.cpu_count()}; {clients}; "
              f"{args.seconds:g} s per phase; work dir {work}")
        cached = _load(_agent_worker, (bench.socket, args.threads, args.seconds), args.processes)
        direct = _load(_direct_worker, (bench.grpc_addr, bench.bundle, bench.token, args.threads,
                                        args.seconds), args.processes)
        first = _first_fetches(bench.socket, args.identities, args.at_once)
        print(_line("agent, FetchX509SVID from cache", cached, args.seconds))
        print(_line("baseline: server CreateCertificate, direct", direct, args.seconds))
        print(_line(f"agent, first fetch (attest+key+sign), {args.at_once} at once", first, None))
        print(f"  ratios: cached/direct throughput {len(cached) / max(1, len(direct)):.1f}x; "
              f"first-fetch p99 / direct p99 {quantile(first, 0.99) / quantile(direct, 0.99):.2f}x; "
              f"cached p99 / direct p99 {quantile(cached, 0.99) / quantile(direct, 0.99):.2f}x")
        print(f"  first fetch mean {statistics.fmean(first) * 1e3:.1f} ms")
    finally:
        bench.stop()
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "first-fetch":
        _first_fetch(sys.argv[2])
        sys.exit(0)
    sys.exit(main())
