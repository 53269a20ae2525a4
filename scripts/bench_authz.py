"""The measuring side of scripts/bench-authz.

Builds 10,000 policies over 1,000 namespaces (per namespace: a namespace-wide DENY on admin
paths, an AUDIT, and eight ALLOW policies each selecting one app), then measures
  1. in process: `evaluate` per decision (p50/p99, decisions/s) over random requests to 8,000
     workloads; the same with the per-workload plan cache off; and a naive baseline that scans
     every policy for scope and match (what an unindexed engine does), same requests;
  2. ext_authz: Authorization/Check over gRPC (plaintext, loopback) to `--servers` processes
     sharing one port (SO_REUSEPORT, as meshca's workers), each with its own PolicyStore, loaded
     by h2load (C, its own process) with a prebuilt length-prefixed CheckRequest: one run for a
     request that is allowed, one for a request that gets the 403.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import re
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meshca.authz import AuthorizationPolicy, PolicySet, evaluate, parse_policy, parse_request
from meshca.authz.compile import compile_policy
from meshca.authz.model import Action, MeshConfig

P50_TARGET_US = 20.0
CHECKS_TARGET = 3000.0
APPS = 8


def build_policies(namespaces: int = 1000) -> list[AuthorizationPolicy]:
    def policy(ns: str, name: str, spec: dict[str, Any]) -> AuthorizationPolicy:
        return parse_policy({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                             "metadata": {"name": name, "namespace": ns}, "spec": spec})

    policies = []
    for n in range(namespaces):
        ns = f"ns-{n}"
        policies.append(policy(ns, "deny-admin", {"action": "DENY", "rules": [
            {"to": [{"operation": {"paths": ["/admin*"], "notMethods": ["GET"]}}]}]}))
        policies.append(policy(ns, "audit-posts", {"action": "AUDIT", "rules": [
            {"to": [{"operation": {"methods": ["POST"]}}]}]}))
        for a in range(APPS):
            policies.append(policy(ns, f"allow-app-{a}", {
                "selector": {"matchLabels": {"app": f"app-{a}"}},
                "rules": [{"from": [{"source": {"principals": [f"cluster.local/ns/ns-{n}/sa/client-{a}",
                                                               "cluster.local/ns/ingress/*"]}}],
                           "to": [{"operation": {"methods": ["GET", "POST"], "paths": ["/api/*"]}}]},
                          {"from": [{"source": {"namespaces": [f"ns-{(n + 1) % namespaces}"]}}],
                           "when": [{"key": "request.headers[x-tenant]", "values": [f"t-{n}"]}]}]}))
    return policies


def requests(count: int, namespaces: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        n, a = rng.randrange(namespaces), rng.randrange(APPS)
        client = rng.choice([f"ns-{n}/sa/client-{a}", f"ns-{n}/sa/other", "ingress/sa/gw"])
        out.append({"protocol": "HTTP",
                    "source": {"principal": f"spiffe://cluster.local/ns/{client}", "ip": "10.0.0.1"},
                    "destination": {"namespace": f"ns-{n}", "labels": {"app": f"app-{a}",
                                                                        "version": "v1"},
                                    "ip": "10.1.0.1", "port": 8080},
                    "http": {"method": rng.choice(["GET", "POST", "DELETE"]),
                             "path": rng.choice(["/api/items", "/admin/x", "/other"]),
                             "host": "svc", "headers": {"x-tenant": f"t-{n}"}}})
    return out


def naive_decide(compiled: list[Any], request: Any) -> str:
    """The baseline: no index; every policy's scope checked, then Istio's order."""
    labels = request.destination_labels
    applying = [p for p in compiled if p.policy.namespace in ("istio-system",
                                                              request.destination_namespace)
                and all(labels.get(k) == v for k, v in (p.policy.selector or {}).items())]
    if any(p.action is Action.DENY and p.first_match(request) is not None for p in applying):
        return "DENY"
    allows = [p for p in applying if p.action is Action.ALLOW]
    if not allows or any(p.first_match(request) is not None for p in allows):
        return "ALLOW"
    return "DENY"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def in_process(policies: list[AuthorizationPolicy], count: int, namespaces: int) -> float:
    started = time.perf_counter()
    policy_set = PolicySet.build(policies, MeshConfig())
    print(f"compiled {len(policy_set):,} policies over {namespaces:,} namespaces in "
          f"{time.perf_counter() - started:.2f} s", flush=True)
    parsed = [parse_request(r)[0] for r in requests(count, namespaces)]
    for request in parsed[:2000]:  # warm-up
        evaluate(policy_set, request)
    times = []
    decisions = {"ALLOW": 0, "DENY": 0}
    clock = time.perf_counter_ns
    for request in parsed:
        t0 = clock()
        decision = evaluate(policy_set, request)
        times.append((clock() - t0) / 1000)
        decisions[decision.decision] += 1
    total = sum(times) / 1e6
    p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
    print(f"engine (indexed):   {count / total:>10,.0f} decisions/s  p50 {p50:7.1f} µs  p99 "
          f"{p99:7.1f} µs  ({decisions['ALLOW']:,} allow, {decisions['DENY']:,} deny)")
    cold_set = PolicySet.build(policies, MeshConfig(), plan_cache_size=0)
    cold = []
    for request in parsed[: max(2000, count // 10)]:
        t0 = clock()
        evaluate(cold_set, request)
        cold.append((clock() - t0) / 1000)
    print(f"engine, no plan cache:{len(cold) / (sum(cold) / 1e6):>8,.0f} decisions/s  p50 "
          f"{percentile(cold, 0.5):7.1f} µs  p99 {percentile(cold, 0.99):7.1f} µs  ({len(cold):,} "
          "requests: every workload's plan worked out afresh)")
    compiled = [compile_policy(p, MeshConfig(), i) for i, p in enumerate(policies)]
    sample = parsed[: max(200, count // 100)]
    base_times = []
    for request in sample:
        t0 = clock()
        answer = naive_decide(compiled, request)
        base_times.append((clock() - t0) / 1000)
        assert answer == evaluate(policy_set, request).decision, "baseline disagrees"
    b50, b99 = percentile(base_times, 0.5), percentile(base_times, 0.99)
    print(f"baseline (scan all):{len(sample) / (sum(base_times) / 1e6):>10,.0f} decisions/s  p50 "
          f"{b50:7.1f} µs  p99 {b99:7.1f} µs  ({len(sample):,} requests, same answers)")
    print(f"engine/baseline: {b50 / p50:.0f}x faster at p50, {b99 / p99:.0f}x at p99; "
          f"p50 target {P50_TARGET_US:.0f} µs: {'met' if p50 <= P50_TARGET_US else 'MISSED'} "
          f"({P50_TARGET_US / p50:.1f}x headroom)")
    return p50


def serve(addr: str, port_queue: Any, namespaces: int) -> None:
    """One ext_authz server process (as one of meshca's workers): its own PolicyStore built
    from the same generated policies, listening on `addr` (SO_REUSEPORT: grpc's default)."""
    from meshca.service.policy_store import PolicyStore
    from meshca.transport.ext_authz.server import start_ext_authz

    store = PolicyStore()
    store.replace("api", build_policies(namespaces))
    server, port = start_ext_authz(addr, store)
    port_queue.put(port)
    server.wait_for_termination()


def grpc_frame(message: bytes) -> bytes:
    """gRPC length-prefixed message: compressed flag 0, 4-byte big-endian length, bytes."""
    return struct.pack(">BI", 0, len(message)) + message


def probe(port: int, check: Any) -> Any:
    """One Check from a Python client: the body h2load sends must decide as expected."""
    import grpc
    from envoy.service.auth.v3 import external_auth_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return external_auth_pb2_grpc.AuthorizationStub(channel).Check(check, timeout=10)


def h2load(port: int, body: Path, count: int, clients: int, streams: int, log: Path,
           ) -> tuple[float, int, list[int], float]:
    """One h2load run: seconds, requests that got HTTP 200, latencies (µs), h2load CPU s."""
    url = f"http://127.0.0.1:{port}/envoy.service.auth.v3.Authorization/Check"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        ["h2load", "-n", str(count), "-c", str(clients), "-m", str(streams), "-t", "1",
         "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body),
         "--log-file", str(log), url],
        capture_output=True, text=True, timeout=120 + count / 100, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"h2load failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    finished = re.search(r"finished in ([\d.]+)(us|ms|s),", out.stdout)
    codes = re.search(r"status codes: (\d+) 2xx", out.stdout)
    if not finished or not codes:
        raise RuntimeError(f"could not read h2load's summary:\n{out.stdout}")
    seconds = float(finished.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[finished.group(2)]
    latencies = [int(f[2]) for f in (line.split() for line in log.read_text().splitlines())
                 if len(f) >= 3]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, int(codes.group(1)), latencies, cpu


def process_cpu(pids: list[int]) -> float:
    """utime + stime of the server processes so far, in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def over_grpc(count: int, namespaces: int, clients: int, streams: int, servers: int) -> float:
    """Both kinds of answer (an ALLOW and a 403 DENY), `count` checks each, from h2load."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.integration.authz_envoy import check_request

    sample = requests(400, namespaces, seed=11)
    policy_set = PolicySet.build(build_policies(namespaces), MeshConfig())
    chosen: dict[str, dict[str, Any]] = {}
    for raw in sample:  # one request of each kind, answered as the engine answers it
        chosen.setdefault(evaluate(policy_set, parse_request(raw)[0]).decision, raw)
    context = multiprocessing.get_context("spawn")
    ports = context.Queue()
    procs = []
    with tempfile.TemporaryDirectory(prefix="bench-authz.") as work:
        try:
            first = context.Process(target=serve, args=("127.0.0.1:0", ports, namespaces))
            first.start()
            procs.append(first)
            port = ports.get(timeout=180)
            for _ in range(servers - 1):  # the rest share the port (SO_REUSEPORT)
                proc = context.Process(target=serve, args=(f"127.0.0.1:{port}", ports, namespaces))
                proc.start()
                procs.append(proc)
            for _ in range(servers - 1):
                if ports.get(timeout=180) != port:
                    raise RuntimeError("a server process did not share the port")
            print(f"ext_authz: {servers} server process(es) on 127.0.0.1:{port} (SO_REUSEPORT), "
                  f"each with its own PolicyStore of {len(policy_set):,} policies; load: "
                  f"h2load -c {clients} -m {streams} -t 1, {count:,} checks per kind", flush=True)
            rates = []
            for kind in ("ALLOW", "DENY"):
                check = check_request(chosen[kind])
                answer = probe(port, check)
                expected = 0 if kind == "ALLOW" else 7  # OK / PERMISSION_DENIED
                if answer.status.code != expected:
                    raise RuntimeError(f"probe for {kind} answered {answer.status}")
                header = (answer.ok_response.headers if kind == "ALLOW"
                          else answer.denied_response.headers)[0].header.value
                body = Path(work) / f"{kind}.bin"
                body.write_bytes(grpc_frame(check.SerializeToString()))
                h2load(port, body, min(count, 2000), clients, streams, Path(work) / "warm.log")
                pids = [proc.pid for proc in procs if proc.pid is not None]
                cpu0 = process_cpu(pids)
                seconds, ok, latencies, h2cpu = h2load(port, body, count, clients, streams,
                                                       Path(work) / f"{kind}.log")
                server_cores = (process_cpu(pids) - cpu0) / seconds
                rate = ok / seconds
                rates.append(rate)
                lat_ms = [v / 1000 for v in latencies]
                print(f"ext_authz {kind:5} ({header}): {rate:>8,.0f} checks/s  p50 "
                      f"{percentile(lat_ms, 0.5):.2f} ms  p99 {percentile(lat_ms, 0.99):.2f} ms  "
                      f"({ok:,}/{count:,} HTTP 200 in {seconds:.2f} s; servers {server_cores:.2f} "
                      f"cores, h2load {h2cpu / seconds:.2f} cores)", flush=True)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.join(10)
    rate = min(rates)
    print(f"ext_authz/target ({CHECKS_TARGET:,.0f}/s), slower kind: {rate / CHECKS_TARGET:.2f}x: "
          f"{'met' if rate >= CHECKS_TARGET else 'MISSED'}")
    return rate


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", "--decisions", type=int, default=50_000)
    parser.add_argument("-g", "--checks", type=int, default=10_000)
    parser.add_argument("-c", "--clients", type=int, default=8, help="h2load connections")
    parser.add_argument("-m", "--streams", type=int, default=8, help="streams per connection")
    parser.add_argument("-w", "--servers", type=int, default=2, help="ext_authz processes")
    parser.add_argument("--namespaces", type=int, default=1000)
    parser.add_argument("--skip-in-process", action="store_true")
    args = parser.parse_args()
    policies = build_policies(args.namespaces)
    p50 = 0.0 if args.skip_in_process else in_process(policies, args.decisions, args.namespaces)
    rate = over_grpc(args.checks, args.namespaces, args.clients, args.streams, args.servers)
    return 0 if p50 <= P50_TARGET_US and rate >= CHECKS_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
