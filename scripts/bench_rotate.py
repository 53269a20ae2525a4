"""scripts/bench-rotate: CreateCertificate under steady load while the CA rotates.

One process drives the load (grpc.aio over TLS, a fixed number of requests in flight, every
request timed and its status kept) and, from a second task, the operator's steps through the
admin REST API: prepare and activate a new intermediate, then prepare and activate a new root
(publish lead waived, as an operator ahead of schedule would). The report splits every request
into three windows by its start time — before the first step, during the steps (until every
worker has had two reload intervals to swap signers), after — and prints failures by status
code and p50/p99 for each, and how many certificates each issuer signed.

Pass/fail: 0 failed requests, and p99 during the rotation at most twice p99 before it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from meshca.gen.istio.v1.auth import ca_pb2, ca_pb2_grpc


@dataclass
class Sample:
    started: float
    seconds: float
    code: str
    issuer: str = ""


@dataclass
class Load:
    samples: list[Sample] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


def make_csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
            .sign(key, hashes.SHA256()).public_bytes(Encoding.PEM).decode())


async def client(stub: ca_pb2_grpc.IstioCertificateServiceStub, request: ca_pb2.IstioCertificateRequest,
                 metadata: tuple[tuple[str, str], ...], load: Load) -> None:
    issuers: dict[bytes, str] = {}
    while not load.stop.is_set():
        started = time.monotonic()
        try:
            response = await stub.CreateCertificate(request, metadata=metadata, timeout=30)
            code, issuer = "OK", ""
            leaf = x509.load_pem_x509_certificate(response.cert_chain[0].encode())
            key = leaf.issuer.public_bytes()
            issuer = issuers.setdefault(key, leaf.issuer.rfc4514_string())
        except grpc.aio.AioRpcError as exc:
            code, issuer = exc.code().name, ""
        load.samples.append(Sample(started, time.monotonic() - started, code, issuer))


def admin_call(base: str, token: str, context: ssl.SSLContext, path: str,
               body: dict[str, object] | None = None) -> dict[str, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method="POST" if data else "GET",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        result: dict[str, object] = json.load(response)
        return result


def percentile_ms(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[max(0, min(len(ordered) - 1, int(p / 100 * len(ordered) + 0.5) - 1))]


async def run(args: argparse.Namespace) -> int:
    data = Path(args.data_dir)
    endpoints = json.loads((data / "endpoints.json").read_text())
    bundle = (data / "root-cert.pem").read_bytes()
    token = (data / "admin-token").read_text().strip()
    workload_token = Path(args.token).read_text().strip()
    context = ssl.create_default_context(cadata=bundle.decode())
    context.check_hostname = False
    admin = f"https://{endpoints['admin']}"
    request = ca_pb2.IstioCertificateRequest(csr=make_csr(), validity_duration=0)
    metadata = (("authorization", f"Bearer {workload_token}"),)
    load = Load()
    channels = [grpc.aio.secure_channel(
        endpoints["grpc"], grpc.ssl_channel_credentials(root_certificates=bundle),
        options=[("grpc.ssl_target_name_override", "localhost"),
                 # One TLS connection per channel, as separate sidecars would have.
                 ("grpc.use_local_subchannel_pool", 1)]) for _ in range(args.connections)]
    stubs = [ca_pb2_grpc.IstioCertificateServiceStub(c) for c in channels]
    tasks = [asyncio.create_task(client(stubs[i % len(stubs)], request, metadata, load))
             for i in range(args.in_flight)]
    loop = asyncio.get_running_loop()
    print(f"load: {args.in_flight} requests in flight on {args.connections} TLS connections; "
          f"{args.before:.0f} s before the rotation")
    await asyncio.sleep(args.before)
    steps: list[tuple[float, str]] = []
    rotation_started = time.monotonic()

    async def step(path: str, body: dict[str, object], label: str) -> None:
        result = await loop.run_in_executor(None, admin_call, admin, token, context, path, body)
        steps.append((time.monotonic(), label))
        print(f"  t+{time.monotonic() - rotation_started:5.1f} s  {label}: "
              f"{json.dumps(result)[:110]}")

    await step("/v1/ca:prepare", {"kind": "intermediate"}, "prepare intermediate")
    await step("/v1/ca:activate", {"kind": "intermediate"}, "activate intermediate")
    await asyncio.sleep(args.reload * 2)
    await step("/v1/ca:prepare", {"kind": "root"}, "prepare root")
    await step("/v1/ca:activate", {"kind": "root", "waive_publish_lead": True}, "activate root")
    # Every worker re-reads the journal every reload interval: two of them cover the swap.
    await asyncio.sleep(args.reload * 2)
    rotation_ended = time.monotonic()
    await asyncio.sleep(args.after)
    load.stop.set()
    await asyncio.gather(*tasks)
    for channel in channels:
        await channel.close()
    return report(load.samples, rotation_started, rotation_ended, args)


def report(samples: list[Sample], started: float, ended: float, args: argparse.Namespace) -> int:
    windows = {
        "before": [s for s in samples if s.started < started],
        "during": [s for s in samples if started <= s.started < ended],
        "after": [s for s in samples if s.started >= ended],
    }
    print()
    print(f"{'window':>7} {'requests':>9} {'failed':>7} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8}  "
          "failures by code")
    for name, group in windows.items():
        ok = [s.seconds for s in group if s.code == "OK"]
        failed = Counter(s.code for s in group if s.code != "OK")
        span = (max(s.started for s in group) - min(s.started for s in group)) if group else 0
        rate = len(group) / span if span else float("nan")
        print(f"{name:>7} {len(group):>9} {sum(failed.values()):>7} {rate:>8.1f} "
              f"{percentile_ms(ok, 50):>8.1f} {percentile_ms(ok, 99):>8.1f}  "
              f"{dict(failed) or '-'}")
    print("\ncertificates by issuer (in order of first appearance):")
    first_seen: dict[str, float] = {}
    counts: Counter[str] = Counter()
    for s in samples:
        if s.code == "OK":
            first_seen.setdefault(s.issuer, s.started)
            counts[s.issuer] += 1
    for issuer in sorted(first_seen, key=first_seen.__getitem__):
        print(f"  {counts[issuer]:>7}  {issuer}")
    failures = sum(1 for s in samples if s.code != "OK")
    before = percentile_ms([s.seconds for s in windows["before"] if s.code == "OK"], 99)
    during = percentile_ms([s.seconds for s in windows["during"] if s.code == "OK"], 99)
    ratio = during / before if before else float("nan")
    print(f"\nfailed requests: {failures} (must be 0)")
    print(f"p99 during / p99 before: {ratio:.2f} (must be at most 2)")
    print(f"intermediates seen: {len(first_seen)} (the rotation must show 3: the first, the one "
          "activated, the one under the new root)")
    good = failures == 0 and ratio <= 2 and len(first_seen) >= 3
    print("bench-rotate: " + ("PASS" if good else "FAIL"))
    return 0 if good else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--token", required=True, help="file holding a workload token")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--before", type=float, default=10.0, help="seconds of load first")
    parser.add_argument("--after", type=float, default=10.0, help="seconds of load after")
    parser.add_argument("--reload", type=float, default=5.0,
                        help="the server's --ca-reload-interval, seconds")
    args = parser.parse_args()
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
