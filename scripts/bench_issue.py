"""Helpers for scripts/bench-issue: inputs, one-shot probes, and the final report.

The shell script owns the processes (meshca, cfssl serve, h2load); this module only builds
the request bodies, proves one request of each kind succeeds before the load, and turns
h2load's summary and per-request logs into the report.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import socket
import sqlite3
import ssl
import statistics
import struct
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding


def fail(message: str) -> int:
    print(f"bench-issue: FAIL: {message}", file=sys.stderr)
    return 1


# --- inputs -------------------------------------------------------------------------------


def grpc_frame(message: bytes) -> bytes:
    """gRPC length-prefixed message: compressed flag 0, 4-byte big-endian length, bytes."""
    return struct.pack(">BI", 0, len(message)) + message


def unframe(frame: bytes) -> bytes:
    flag, length = struct.unpack(">BI", frame[:5])
    if flag != 0 or length != len(frame) - 5:
        raise ValueError(f"bad gRPC frame: flag {flag}, length {length}, {len(frame) - 5} bytes")
    return frame[5:]


def cmd_inputs(args: argparse.Namespace) -> int:
    from meshca.gen.istio.v1.auth import ca_pb2

    out: Path = args.out
    key = ec.generate_private_key(ec.SECP256R1())
    # Empty subject and no SAN, like `meshca request`: meshca stamps the caller's SPIFFE ID,
    # and cfssl signs it as it is. Key generation is outside the measured load.
    csr_pem = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(Encoding.PEM)
        .decode()
    )
    (out / "csr.pem").write_text(csr_pem)
    request = ca_pb2.IstioCertificateRequest(csr=csr_pem, validity_duration=0)
    (out / "meshca-request.bin").write_bytes(grpc_frame(request.SerializeToString()))
    (out / "cfssl-request.json").write_text(json.dumps({"certificate_request": csr_pem}))
    return 0


def cmd_free_port(_args: argparse.Namespace) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
    return 0


# --- probes -------------------------------------------------------------------------------


def cmd_probe_meshca(args: argparse.Namespace) -> int:
    import grpc

    from meshca.gen.istio.v1.auth import ca_pb2, ca_pb2_grpc

    request = ca_pb2.IstioCertificateRequest.FromString(unframe(args.frame.read_bytes()))
    token = args.token.read_text().strip()
    credentials = grpc.ssl_channel_credentials(root_certificates=args.bundle.read_bytes())
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(args.addr, credentials, options=options) as channel:
        stub = ca_pb2_grpc.IstioCertificateServiceStub(channel)
        try:
            response = stub.CreateCertificate(
                request, metadata=[("authorization", f"Bearer {token}")], timeout=30
            )
        except grpc.RpcError as exc:
            return fail(f"meshca probe: {exc.code().name}: {exc.details()}")
    chain = list(response.cert_chain)
    if len(chain) < 2:
        return fail(f"meshca probe: cert_chain has {len(chain)} element(s)")
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uri = san.get_values_for_type(x509.UniformResourceIdentifier)[0]
    print(f"  meshca probe (Python grpc client, same frame): OK, grpc-status 0, leaf {uri}, "
          f"{len(chain)} chain elements")
    return 0


def cmd_probe_cfssl(args: argparse.Namespace) -> int:
    context = ssl.create_default_context(cafile=str(args.cacert))
    request = urllib.request.Request(
        args.url, data=args.body.read_bytes(), headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        status = response.status
        body = json.loads(response.read())
    if status != 200 or body.get("success") is not True:
        return fail(f"cfssl probe: HTTP {status}, success={body.get('success')!r}, "
                    f"errors={body.get('errors')!r}")
    leaf = x509.load_pem_x509_certificate(body["result"]["certificate"].encode())
    print(f"  cfssl probe (urllib, same body): OK, HTTP {status}, success true, "
          f"leaf issued by {leaf.issuer.rfc4514_string()}")
    return 0


# --- report -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """One h2load run against one server."""

    requests: int
    succeeded: int
    status_2xx: int
    seconds: float
    protocol: str
    latencies_us: list[int]
    server_cpu_s: float
    h2load_cpu_s: float

    @property
    def per_second(self) -> float:
        return self.succeeded / self.seconds if self.seconds > 0 else 0.0


def percentile_ms(latencies_us: list[int], p: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    ordered = sorted(latencies_us)
    if not ordered:
        return float("nan")
    rank = min(len(ordered), max(1, math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1] / 1000.0


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def read_run(base: str) -> Run:
    """`base`.out is h2load's stdout, .log its --log-file, .server-cpu/.h2load-cpu the CPU."""

    def part(suffix: str) -> str:
        return Path(f"{base}.{suffix}").read_text()

    text = part("out")
    finished = re.search(r"finished in ([\d.]+)(us|ms|s),", text)
    counts = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded", text)
    codes = re.search(r"status codes: (\d+) 2xx", text)
    protocol = re.search(r"Application protocol: (\S+)", text)
    if not (finished and counts and codes):
        raise ValueError(f"could not read h2load's summary in {base}.out")
    latencies = []
    for line in part("log").splitlines():
        fields = line.split()  # start time (us since epoch), HTTP status, duration (us)
        if len(fields) >= 3:
            latencies.append(int(fields[2]))
    user, system = part("h2load-cpu").split()
    return Run(
        requests=int(counts.group(1)),
        succeeded=int(counts.group(2)),
        status_2xx=int(codes.group(1)),
        seconds=float(finished.group(1)) * _UNITS[finished.group(2)],
        protocol=protocol.group(1) if protocol else "?",
        latencies_us=latencies,
        server_cpu_s=float(part("server-cpu")),
        h2load_cpu_s=float(user) + float(system),
    )


def issued_rows(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return int(connection.execute("SELECT COUNT(*) FROM issued_certificates").fetchone()[0])


@dataclass(frozen=True, slots=True)
class Summary:
    name: str
    runs: list[Run]

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.runs)

    @property
    def succeeded(self) -> int:
        return sum(r.succeeded for r in self.runs)

    @property
    def per_second(self) -> float:
        """The median round: one noisy round does not move it."""
        return statistics.median(r.per_second for r in self.runs)

    def percentile_ms(self, p: float) -> float:
        return percentile_ms([x for r in self.runs for x in r.latencies_us], p)

    @property
    def server_cores(self) -> float:
        return sum(r.server_cpu_s for r in self.runs) / sum(r.seconds for r in self.runs)

    @property
    def h2load_cores(self) -> float:
        return sum(r.h2load_cpu_s for r in self.runs) / sum(r.seconds for r in self.runs)

    @property
    def cpu_ms_per_certificate(self) -> float:
        return cpu_ms_per_certificate(sum(r.server_cpu_s for r in self.runs), self.succeeded)


def cpu_ms_per_certificate(cpu_s: float, certificates: int) -> float:
    """Server CPU (every process of it, all threads) per certificate issued."""
    return 1000 * cpu_s / certificates if certificates else float("nan")


def cmd_report(args: argparse.Namespace) -> int:
    work: Path = args.work
    problems: list[str] = []
    summaries = {name: Summary(name, []) for name in ("meshca", "cfssl")}
    recorded: list[tuple[int, int, int]] = []
    for i in range(1, args.rounds + 1):
        for name, summary in summaries.items():
            run = read_run(f"{work}/r{i}-{name}")
            summary.runs.append(run)
            if run.protocol != "h2":
                problems.append(f"{name} round {i}: h2load spoke {run.protocol}, not h2")
            if run.succeeded != run.requests or run.status_2xx != run.requests:
                problems.append(f"{name} round {i}: {run.succeeded}/{run.requests} succeeded, "
                                f"{run.status_2xx} 2xx")
            if len(run.latencies_us) != run.requests:
                problems.append(f"{name} round {i}: {len(run.latencies_us)} log rows for "
                                f"{run.requests} requests")
        before = int((work / f"r{i}-meshca.rows-before").read_text())
        after = int((work / f"r{i}-meshca.rows-after").read_text())
        ok = summaries["meshca"].runs[-1].succeeded
        recorded.append((i, after - before, ok))
        if after - before != ok:
            problems.append(
                f"meshca round {i}: {after - before} certificates recorded in issued_certificates "
                f"but h2load counted {ok} succeeded (HTTP 200 does not prove grpc-status 0)"
            )
    meshca, cfssl = summaries["meshca"], summaries["cfssl"]

    rule = "=" * 86
    print()
    print(rule)
    print("Certificate issuance under load: meshca vs cfssl")
    print(rule)
    print(f"machine        : nproc={args.nproc}; servers and load generator share these cores")
    print(f"load generator : {args.h2load_version}, in its own process, -t {args.threads} "
          f"(one thread), HTTP/2 over TLS to both")
    print(f"parameters     : -n {args.requests} -c {args.clients} -m {args.streams} per run "
          f"(= up to {args.clients * args.streams} requests in flight on {args.clients} "
          f"connections), {args.rounds} round(s), meshca then cfssl in each")
    print("same CSR       : one ECDSA P-256 PKCS#10 (empty subject, no SAN) in every request")
    print("meshca         : gRPC CreateCertificate, TLS, dev-token JWT auth, P-256 CA, every "
          "certificate recorded in SQLite before the reply")
    print("cfssl          : cfssl serve, POST /api/v1/cfssl/sign (JSON), TLS, P-256 CA, "
          "no certificate database")
    print()
    print(f"{'round':>5} {'server':>7} {'requests':>9} {'succeeded':>10} {'issuances/s':>12} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'wall s':>7} {'server cores':>13} {'h2load cores':>13} "
          f"{'CPU ms/cert':>12}")
    for i in range(args.rounds):
        for s in (meshca, cfssl):
            r = s.runs[i]
            print(f"{i + 1:>5} {s.name:>7} {r.requests:>9} {r.succeeded:>10} {r.per_second:>12.1f} "
                  f"{percentile_ms(r.latencies_us, 50):>8.2f} "
                  f"{percentile_ms(r.latencies_us, 99):>8.2f} {r.seconds:>7.2f} "
                  f"{r.server_cpu_s / r.seconds:>13.2f} {r.h2load_cpu_s / r.seconds:>13.2f} "
                  f"{cpu_ms_per_certificate(r.server_cpu_s, r.succeeded):>12.3f}")
    print()
    print("summary (issuances/s: median round; p50/p99: all requests of all rounds)")
    print(f"{'server':>7} {'requests':>9} {'succeeded':>10} {'issuances/s':>12} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'server cores':>13} {'CPU ms/cert':>12}")
    for s in (meshca, cfssl):
        print(f"{s.name:>7} {s.requests:>9} {s.succeeded:>10} {s.per_second:>12.1f} "
              f"{s.percentile_ms(50):>8.2f} {s.percentile_ms(99):>8.2f} {s.server_cores:>13.2f} "
              f"{s.cpu_ms_per_certificate:>12.3f}")
    print()
    for name in ("meshca", "cfssl"):
        idle = work / f"{name}.rss-idle"
        if idle.exists():
            print_rss(name, Rss.read(idle),
                      [Rss.read(work / f"r{i}-{name}.rss") for i in range(1, args.rounds + 1)])
            print()
    for i, rows, ok in recorded:
        print(f"meshca round {i}: {rows} new rows in issued_certificates, h2load succeeded {ok}: "
              f"{'match' if rows == ok else 'MISMATCH'}")
    if cfssl.per_second > 0:
        print(f"ratio meshca/cfssl, throughput  : {meshca.per_second / cfssl.per_second:.2f}")
    print(f"CPU ms per certificate          : meshca {meshca.cpu_ms_per_certificate:.3f}, "
          f"cfssl {cfssl.cpu_ms_per_certificate:.3f}")
    print(f"ratio meshca/cfssl, p50 latency : {meshca.percentile_ms(50) / cfssl.percentile_ms(50):.2f}"
          f"  (p99: {meshca.percentile_ms(99) / cfssl.percentile_ms(99):.2f})")
    print("latency: h2load --log-file, request start to end of response; nearest-rank "
          "percentiles. server cores: server CPU seconds / wall seconds of the run. CPU ms/cert: "
          "server CPU seconds (all its processes) / certificates issued.")
    print(rule)
    for problem in problems:
        fail(problem)
    return 1 if problems else 0


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def _role(pid: int, top: int) -> str:
    """What a process of the server's tree is, from its command line."""
    if pid == top:
        return "main"
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    text = b" ".join(argv).decode(errors="replace")
    if "resource_tracker" in text:
        return "resource-tracker"
    return "worker" if "spawn_main" in text or "multiprocessing" in text else "child"


def cmd_rss(args: argparse.Namespace) -> int:
    """One line per process of the server's tree (it and its direct children): pid, role,
    resident set now and at its peak (VmRSS, VmHWM), in KiB."""
    top: int = args.pid
    pids = [top]
    for task in Path(f"/proc/{top}/task").iterdir():
        pids += [int(p) for p in (task / "children").read_text().split()]
    for pid in pids:
        try:
            print(pid, _role(pid, top), _status_kb(pid, "VmRSS"), _status_kb(pid, "VmHWM"))
        except OSError:  # gone meanwhile
            continue
    return 0


@dataclass(frozen=True, slots=True)
class Rss:
    """A snapshot of a server's processes: pid -> (role, RSS KiB, peak RSS KiB)."""

    processes: dict[int, tuple[str, int, int]]

    @classmethod
    def read(cls, path: Path) -> Rss:
        found: dict[int, tuple[str, int, int]] = {}
        for line in path.read_text().splitlines():
            pid, role, rss, hwm = line.split()
            found[int(pid)] = (role, int(rss), int(hwm))
        return cls(found)


def print_rss(name: str, idle: Rss, rounds: list[Rss]) -> None:
    """RSS of each process, idle and after each round, and the peak over the whole run."""
    heads = " ".join(f"{f'round {i + 1}':>8}" for i in range(len(rounds)))
    print(f"{name} RSS per process, MiB (idle: before the load; round N: after it; peak: VmHWM)")
    print(f"{'pid':>8} {'role':>16} {'idle':>8} {heads} {'peak':>8}")
    for pid, (role, rss, _) in sorted(idle.processes.items()):
        after = [r.processes.get(pid) for r in rounds]
        cells = " ".join(f"{a[1] / 1024:>8.1f}" if a else f"{'gone':>8}" for a in after)
        peak = max([rss] + [a[2] for a in after if a]) / 1024
        print(f"{pid:>8} {role:>16} {rss / 1024:>8.1f} {cells} {peak:>8.1f}")


def cmd_rows(args: argparse.Namespace) -> int:
    print(issued_rows(args.db))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_issue.py")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inputs")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_inputs)

    p = sub.add_parser("free-port")
    p.set_defaults(func=cmd_free_port)

    p = sub.add_parser("probe-meshca")
    p.add_argument("--addr", required=True)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--frame", type=Path, required=True)
    p.add_argument("--token", type=Path, required=True)
    p.set_defaults(func=cmd_probe_meshca)

    p = sub.add_parser("probe-cfssl")
    p.add_argument("--url", required=True)
    p.add_argument("--cacert", type=Path, required=True)
    p.add_argument("--body", type=Path, required=True)
    p.set_defaults(func=cmd_probe_cfssl)

    p = sub.add_parser("rows")
    p.add_argument("--db", type=Path, required=True)
    p.set_defaults(func=cmd_rows)

    p = sub.add_parser("rss")
    p.add_argument("--pid", type=int, required=True)
    p.set_defaults(func=cmd_rss)

    p = sub.add_parser("report")
    p.add_argument("--work", type=Path, required=True)
    for name in ("rounds", "requests", "clients", "streams", "threads"):
        p.add_argument(f"--{name}", type=int, required=True)
    p.add_argument("--nproc", required=True)
    p.add_argument("--h2load-version", required=True)
    p.set_defaults(func=cmd_report)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
