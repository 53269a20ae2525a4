"""The measuring side of scripts/bench-auth: token authentication, in one process on one core.

`run` measures, with a warm-up before each figure and a fixed count per figure:
  1. jwks: JwksValidator.validate on distinct tokens (cold; ES256 and RS256 issuer keys) and
     CachingAuthenticator over it on the same tokens again (cached: every lookup a hit);
  2. tokenreview: TokenReviewValidator.validate on distinct tokens, each one TokenReview to a
     FakeKubeApi through KubeApi (the real `kubernetes` client) and KubeCalls, and the same
     behind CachingAuthenticator;
  3. API-server calls for 1,000 pods x 10 authentications through CachingAuthenticator over
     TokenReviewValidator, against the same sequence with no cache (one call per CSR).

`fake-server` is the FakeKubeApi (tests/fakes/kube_api.py) in a process of its own, pinned to
the other cores, driven over its stdin/stdout with one JSON object a line: it mints tokens,
counts TokenReviews and reports its CPU time. It exits when its stdin closes, so it never
outlives the measuring process.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import random
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshca.core import jwt
from meshca.core.sa_token import ServiceAccount
from meshca.service.key_sources import StaticKeySource
from meshca.service.ports import NoAuthMetrics
from meshca.service.token_cache import CacheSettings, CachingAuthenticator
from meshca.service.token_validation import JwksValidator, TokenReviewValidator

ROOT = Path(__file__).resolve().parents[1]
AUDIENCE = "istio-ca"
CACHED_TARGET = 20_000.0  # validations per second on one core, all hits
CALLS_TARGET = 1_000  # TokenReviews per 10,000 CSR authentications
Validate = Callable[[str], Awaitable[ServiceAccount]]
Who = tuple[str, str]  # (namespace, service account)


def say(line: str = "") -> None:
    print(line, flush=True)


def fail(message: str) -> int:
    print(f"bench-auth: FAIL: {message}", file=sys.stderr, flush=True)
    return 1


# --- core pinning -------------------------------------------------------------------------


def pin(cpus: set[int]) -> str:
    """Pin every thread of this process to `cpus` (threads started later inherit it)."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned: os.sched_setaffinity is not available here"
    try:
        for tid in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(tid), cpus)
    except OSError as exc:
        return f"not pinned: {exc}"
    return "pinned to CPU " + ",".join(str(c) for c in sorted(cpus))


def thread_cpus() -> tuple[int, set[int]]:
    """How many threads this process has, and the union of the CPUs they may run on."""
    tids = os.listdir("/proc/self/task")
    allowed: set[int] = set()
    for tid in tids:
        try:
            allowed |= os.sched_getaffinity(int(tid))
        except OSError:
            continue  # the thread ended meanwhile
    return len(tids), allowed


# --- the fake API server's process --------------------------------------------------------


def cmd_fake_server(args: argparse.Namespace) -> int:
    # `timeout` signals its whole process group: this process stops when the bench closes its
    # stdin (or exits), so that the bench's calls in flight never meet a vanished server.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    cpus = {int(c) for c in args.cpus.split(",")} if args.cpus else set()
    if cpus:
        pin(cpus)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.fakes import kube_api
    from tests.fakes.kube_api import FakeKubeApi

    # A kube-apiserver (Go's net package) sets TCP_NODELAY on every connection; the fake's
    # http.server handler does not, and writes the headers and the body of each answer
    # separately, so Nagle's algorithm would hold every body until the client's delayed ACK
    # (about 40 ms on Linux). Set here, in this process, before the first connection.
    kube_api._Handler.disable_nagle_algorithm = True
    out = sys.stdout
    kube = FakeKubeApi(algorithm="ES256")
    kube.start()
    try:
        for line in sys.stdin:
            request = json.loads(line)
            op = request["op"]
            reply: dict[str, Any]
            if op == "setup":
                pods: list[list[str]] = []
                for i in range(int(request["pods"])):
                    namespace = f"ns-{i % int(request['namespaces'])}"
                    account = f"sa-{(i // int(request['namespaces'])) % int(request['accounts'])}"
                    if kube.service_account_uid(namespace, account) is None:
                        kube.add_service_account(namespace, account)
                    pod = f"pod-{i}"
                    kube.add_pod(namespace, pod, service_account=account, node=f"node-{i % 50}")
                    pods.append([namespace, account, pod])
                kube.kubeconfig(request["kubeconfig"])
                _, allowed = thread_cpus()
                reply = {"url": kube.url, "issuer": kube.issuer, "pods": pods, "cpus": sorted(allowed)}
            elif op == "mint":
                reply = {"tokens": [kube.mint(ns, sa, audiences=[AUDIENCE], pod=pod)
                                    for ns, sa, pod in request["pods"]]}
            elif op == "calls":
                calls = kube.calls
                reply = {"tokenreviews": calls[("POST", "tokenreviews")], "all": sum(calls.values())}
            elif op == "reset":
                kube.reset_calls()
                reply = {}
            elif op == "cpu":
                usage = resource.getrusage(resource.RUSAGE_SELF)
                reply = {"seconds": usage.ru_utime + usage.ru_stime}
            else:
                reply = {"error": f"unknown op {op!r}"}
            out.write(json.dumps(reply) + "\n")
            out.flush()
    finally:
        kube.stop()
    return 0


class FakeServer:
    """The fake-server process, seen from the measuring process."""

    def __init__(self, cpus: set[int], pid_file: Path | None) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "fake-server",
                   "--cpus", ",".join(str(c) for c in sorted(cpus))]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True, env=env, cwd=ROOT)
        self.pid = self._process.pid
        if pid_file is not None:
            pid_file.write_text(f"{self.pid}\n")

    def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps({"op": op, **fields}) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the fake API server exited (status {self._process.poll()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"fake API server: {reply['error']}")
        return reply

    def tokenreviews(self) -> int:
        return int(self.ask("calls")["tokenreviews"])

    def cpu_seconds(self) -> float:
        return float(self.ask("cpu")["seconds"])

    def close(self) -> None:
        if self._process.stdin is not None:
            try:
                self._process.stdin.close()  # the server's cue to stop
            except OSError:
                pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)


# --- measuring ----------------------------------------------------------------------------


@dataclass
class Measurement:
    label: str
    count: int
    seconds: float
    cpu_seconds: float  # this process, all threads
    latencies: list[float]
    concurrency: int

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def check(results: Sequence[ServiceAccount], expected: Sequence[Who], what: str) -> None:
    if len(results) != len(expected):
        raise RuntimeError(f"{what}: {len(results)} results for {len(expected)} tokens")
    for got, want in zip(results, expected, strict=True):
        if (got.namespace, got.name) != want:
            raise RuntimeError(f"{what}: a token validated as {got.namespace}/{got.name}, "
                               f"expected {want[0]}/{want[1]}")


async def run_sequential(validate: Validate, tokens: Sequence[str]) -> tuple[float, float,
                                                                             list[float],
                                                                             list[ServiceAccount]]:
    latencies = [0.0] * len(tokens)
    results: list[ServiceAccount] = []
    clock = time.perf_counter
    gc.collect()
    cpu0 = time.process_time()
    start = clock()
    for i, token in enumerate(tokens):
        began = clock()
        results.append(await validate(token))
        latencies[i] = clock() - began
    seconds = clock() - start
    return seconds, time.process_time() - cpu0, latencies, results


async def run_batches(validate: Validate, tokens: Sequence[str],
                      concurrency: int) -> tuple[float, float, list[float], list[ServiceAccount]]:
    """`concurrency` validations at a time: each batch gathered before the next starts."""
    latencies = [0.0] * len(tokens)
    clock = time.perf_counter

    async def one(i: int, token: str) -> ServiceAccount:
        began = clock()
        account = await validate(token)
        latencies[i] = clock() - began
        return account

    results: list[ServiceAccount] = []
    gc.collect()
    cpu0 = time.process_time()
    start = clock()
    for first in range(0, len(tokens), concurrency):
        batch = tokens[first:first + concurrency]
        results.extend(await asyncio.gather(*(one(first + j, t) for j, t in enumerate(batch))))
    seconds = clock() - start
    return seconds, time.process_time() - cpu0, latencies, results


async def measure(label: str, validate: Validate, tokens: Sequence[str], expected: Sequence[Who],
                  warmup: Sequence[str], warmup_expected: Sequence[Who],
                  concurrency: int = 1) -> Measurement:
    async def go(batch: Sequence[str]) -> tuple[float, float, list[float], list[ServiceAccount]]:
        if concurrency == 1:
            return await run_sequential(validate, batch)
        return await run_batches(validate, batch, concurrency)

    await asyncio.sleep(0)  # a moment for the event loop (signals) between measurements
    _, _, _, results = await go(warmup)
    check(results, warmup_expected, f"{label} (warm-up)")
    seconds, cpu, latencies, results = await go(tokens)
    check(results, expected, label)
    return Measurement(label, len(tokens), seconds, cpu, latencies, concurrency)


class CountingValidator:
    """Counts the calls that reach the validator behind a cache (misses)."""

    def __init__(self, validate: Validate) -> None:
        self._validate = validate
        self.calls = 0

    async def __call__(self, token: str) -> ServiceAccount:
        self.calls += 1
        return await self._validate(token)


class CountingMetrics(NoAuthMetrics):
    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()

    def token_cache(self, outcome: str) -> None:
        self.outcomes[outcome] += 1


def cache(validate: Validate, metrics: NoAuthMetrics | None = None) -> CachingAuthenticator:
    return CachingAuthenticator(validate, CacheSettings(), time.time, metrics or NoAuthMetrics())


# --- formatting ---------------------------------------------------------------------------


def duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def row(m: Measurement, note: str = "") -> str:
    return (f"  {m.label:<34} {m.count:>6} in {m.seconds:6.3f} s  {m.rate:>10,.0f} validations/s  "
            f"p50 {duration(m.percentile(0.50)):>9}  p99 {duration(m.percentile(0.99)):>9}"
            + (f"  {note}" if note else ""))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# --- 1. jwks ------------------------------------------------------------------------------


@dataclass
class Issuer:
    alg: str
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    kid: str


def jwks_tokens(issuer: Issuer, issuer_url: str, first: int, count: int) -> tuple[list[str], list[Who]]:
    """Projected, pod-bound tokens as the TokenRequest API issues them, each one distinct."""
    now = int(time.time())
    tokens: list[str] = []
    who: list[Who] = []
    for i in range(first, first + count):
        namespace, account = f"ns-{i % 10}", f"sa-{(i // 10) % 50}"
        claims = {
            "aud": [AUDIENCE], "exp": now + 3600, "iat": now, "iss": issuer_url,
            "jti": str(uuid.uuid4()), "nbf": now, "sub": f"system:serviceaccount:{namespace}:{account}",
            "kubernetes.io": {
                "namespace": namespace,
                "node": {"name": f"node-{i % 50}", "uid": str(uuid.uuid4())},
                "pod": {"name": f"pod-{i}", "uid": str(uuid.uuid4())},
                "serviceaccount": {"name": account, "uid": str(uuid.uuid4())},
            },
        }
        tokens.append(jwt.sign(claims, issuer.key, issuer.kid))
        who.append((namespace, account))
    return tokens, who


async def bench_jwks(args: argparse.Namespace) -> bool:
    n, warm, rounds = args.jwks_tokens, args.warmup, args.cached_rounds
    issuer_url = "https://kubernetes.default.svc.cluster.local"
    issuers = [Issuer("ES256", ec.generate_private_key(ec.SECP256R1()), "bench-es256"),
               Issuer("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048),
                      "bench-rs256")]
    source = StaticKeySource(issuer_url, {i.kid: i.key.public_key() for i in issuers})
    validator = JwksValidator(source, frozenset({AUDIENCE}), skew_seconds=60)
    say("[1] jwks: JwksValidator over StaticKeySource (issuer keys ES256 P-256 and RS256 2048-bit), "
        "no network")
    say(f"    cold: {n} distinct tokens per algorithm, validator called directly, "
        f"after {warm} warm-up tokens; one at a time")
    say(f"    cached: CachingAuthenticator over it; the same {n} tokens, filled once, one warm-up "
        f"pass, then {rounds} passes = {n * rounds} lookups, all hits")
    ok = True
    results: list[tuple[Measurement, Measurement]] = []
    for issuer in issuers:
        tokens, who = jwks_tokens(issuer, issuer_url, 0, n)
        warm_tokens, warm_who = jwks_tokens(issuer, issuer_url, n, warm)
        cold = await measure(f"{issuer.alg} cold (validate)", validator.validate, tokens, who,
                             warm_tokens, warm_who)
        counted = CountingValidator(validator.validate)
        authenticator = cache(counted)
        fill = await run_sequential(authenticator.authenticate, tokens)
        check(fill[3], who, f"{issuer.alg} cache fill")
        misses = counted.calls
        repeated, repeated_who = tokens * rounds, who * rounds
        cached = await measure(f"{issuer.alg} cached (authenticate)", authenticator.authenticate,
                               repeated, repeated_who, tokens, who)
        if counted.calls != misses or misses != n:
            raise RuntimeError(f"{issuer.alg} cached: {counted.calls - misses} lookups missed the cache")
        results.append((cold, cached))
    say()
    for cold, cached in results:
        say(row(cold))
        say(row(cached, f"({len(cached.latencies)} hits, 0 misses)"))
    say()
    for cold, cached in results:
        alg = cold.label.split()[0]
        passed = cached.rate >= CACHED_TARGET
        ok &= passed
        say(f"  {alg}: cached/cold = {cached.rate / cold.rate:,.1f}x;  cached {cached.rate:,.0f}/s "
            f"vs target >= {CACHED_TARGET:,.0f}/s on one core: {verdict(passed)}")
    return ok


# --- 2 and 3. tokenreview -----------------------------------------------------------------


@dataclass
class Cluster:
    server: FakeServer
    pods: list[Who]  # (namespace, account) of pod i
    pod_refs: list[list[str]]  # [namespace, account, pod] of pod i

    def mint(self, pod_indexes: Sequence[int]) -> tuple[list[str], list[Who]]:
        refs = [self.pod_refs[i] for i in pod_indexes]
        tokens = [str(t) for t in self.server.ask("mint", pods=refs)["tokens"]]
        return tokens, [self.pods[i] for i in pod_indexes]

    def spread(self, first: int, count: int) -> tuple[list[str], list[Who]]:
        """`count` distinct tokens for pods first, first+1, ... (wrapping around)."""
        return self.mint([(first + i) % len(self.pods) for i in range(count)])


def review_row(m: Measurement, server_cpu: float) -> str:
    return row(m, f"c={m.concurrency}; CPU/validation: bench {duration(m.cpu_seconds / m.count)}, "
                  f"fake server {duration(server_cpu / m.count)}")


async def measure_reviews(cluster: Cluster, label: str, validate: Validate, tokens: Sequence[str],
                          expected: Sequence[Who], warmup: Sequence[str], warmup_expected: Sequence[Who],
                          concurrency: int) -> tuple[Measurement, int, float]:
    """A measure() that also counts the fake's TokenReviews and CPU time for the measured part."""
    async def warm() -> None:
        _, _, _, results = await (run_sequential(validate, warmup) if concurrency == 1
                                  else run_batches(validate, warmup, concurrency))
        check(results, warmup_expected, f"{label} (warm-up)")

    await warm()
    reviews0, cpu0 = cluster.server.tokenreviews(), cluster.server.cpu_seconds()
    m = await measure(label, validate, tokens, expected, [], [], concurrency)
    reviews = cluster.server.tokenreviews() - reviews0
    return m, reviews, cluster.server.cpu_seconds() - cpu0


async def bench_tokenreview(args: argparse.Namespace, cluster: Cluster,
                            validator: TokenReviewValidator, pool_threads: int) -> None:
    n_seq, n_conc, n_cached, c = args.review_seq, args.review_tokens, args.review_cached, args.concurrency
    rounds, warm = args.cached_rounds, args.review_warmup
    say(f"[2] tokenreview: TokenReviewValidator -> KubeCalls (qps=1e6, burst=1e6: never throttles; "
        f"{pool_threads} threads, the client's connection-pool size) -> KubeApi (`kubernetes` client, "
        f"HTTPS keep-alive) -> FakeKubeApi")
    say(f"    cold: distinct tokens, validator called directly, each one TokenReview; {n_seq} one at "
        f"a time, then {n_conc} in batches of {c}; {warm} warm-up tokens before each")
    say(f"    cached: CachingAuthenticator over it; {n_cached} tokens filled once, one warm-up pass, "
        f"then {rounds} passes = {n_cached * rounds} lookups, all hits")
    say("    The cold figures include the fake API server's work and latency (its HTTP server, "
        "TLS and token checks on the other core), not meshca's alone.")
    next_pod = 0

    def distinct(count: int) -> tuple[list[str], list[Who]]:
        nonlocal next_pod
        minted = cluster.spread(next_pod, count)
        next_pod += count
        return minted

    seq = await measure_reviews(cluster, "cold, one at a time", validator.validate,
                                *distinct(n_seq), *distinct(warm), concurrency=1)
    conc = await measure_reviews(cluster, f"cold, {c} at a time", validator.validate,
                                 *distinct(n_conc), *distinct(warm), concurrency=c)
    for m, reviews, _ in (seq, conc):
        if reviews != m.count:
            raise RuntimeError(f"{m.label}: {reviews} TokenReviews for {m.count} distinct tokens")

    counted = CountingValidator(validator.validate)
    authenticator = cache(counted)
    tokens, who = distinct(n_cached)
    fill = await run_batches(authenticator.authenticate, tokens, c)
    check(fill[3], who, "tokenreview cache fill")
    misses = counted.calls
    cached, reviews, _ = await measure_reviews(
        cluster, "cached (authenticate)", authenticator.authenticate, tokens * rounds, who * rounds,
        tokens, who, concurrency=1)
    if counted.calls != misses or reviews != 0:
        raise RuntimeError(f"tokenreview cached: {counted.calls - misses} misses, {reviews} TokenReviews")
    say()
    say(review_row(seq[0], seq[2]))
    say(review_row(conc[0], conc[2]))
    say(row(cached, f"c=1; {cached.count} hits, 0 TokenReviews"))
    say()
    best_cold = max(seq[0].rate, conc[0].rate)
    say(f"  cached/cold = {cached.rate / best_cold:,.0f}x (against the faster cold figure, "
        f"{best_cold:,.0f}/s)")


async def bench_calls(args: argparse.Namespace, cluster: Cluster, validator: TokenReviewValidator) -> bool:
    pods: int = args.pods
    per_pod: int = args.per_pod
    c: int = args.concurrency
    total = pods * per_pod
    say(f"[3] API-server calls: {pods} pods x {per_pod} CSR authentications = {total}, one token per "
        f"pod (a pod re-presents its projected token until kubelet refreshes it), in a shuffled order "
        f"(seed 1), batches of {c} gathered")
    tokens, who = cluster.mint(list(range(pods)))
    order = [i for i in range(pods) for _ in range(per_pod)]
    random.Random(1).shuffle(order)
    sequence, expected = [tokens[i] for i in order], [who[i] for i in order]

    # Warm-up: other tokens on a throwaway cache; not counted.
    warm_tokens, warm_who = cluster.spread(pods, args.review_warmup)
    throwaway = cache(validator.validate)
    warm = await run_batches(throwaway.authenticate, warm_tokens * 2, c)
    check(warm[3], warm_who * 2, "calls warm-up")

    metrics = CountingMetrics()
    authenticator = cache(validator.validate, metrics)
    reviews0, cpu0 = cluster.server.tokenreviews(), cluster.server.cpu_seconds()
    seconds, bench_cpu, latencies, results = await run_batches(authenticator.authenticate, sequence, c)
    cached_reviews = cluster.server.tokenreviews() - reviews0
    cached_server_cpu = cluster.server.cpu_seconds() - cpu0
    check(results, expected, "cached authentications")
    cached = Measurement("with cache", total, seconds, bench_cpu, latencies, c)

    reviews0, cpu0 = cluster.server.tokenreviews(), cluster.server.cpu_seconds()
    seconds, bench_cpu, latencies, results = await run_batches(validator.validate, sequence, c)
    naive_reviews = cluster.server.tokenreviews() - reviews0
    naive_server_cpu = cluster.server.cpu_seconds() - cpu0
    check(results, expected, "uncached authentications")
    naive = Measurement("no cache (one TokenReview per CSR)", total, seconds, bench_cpu, latencies, c)

    per_10k = cached_reviews * 10_000 / total
    naive_per_10k = naive_reviews * 10_000 / total
    outcomes = metrics.outcomes
    say()
    say(f"  with cache: {cached_reviews} TokenReviews for {total} authentications = "
        f"{per_10k:,.0f} per 10,000 (cache: {outcomes['miss']} misses, {outcomes['hit']} hits, "
        f"{outcomes['coalesced']} coalesced)")
    say(f"  no cache:   {naive_reviews} TokenReviews for {total} authentications = "
        f"{naive_per_10k:,.0f} per 10,000 (the naive one-call-per-CSR baseline)")
    passed = per_10k <= CALLS_TARGET
    say(f"  calls, cache/naive = {cached_reviews / naive_reviews:.3f} "
        f"({naive_reviews / max(cached_reviews, 1):,.1f}x fewer);  <= {CALLS_TARGET:,} per 10,000: "
        f"{verdict(passed)}")
    say(row(cached, f"fake server CPU {cached_server_cpu:.2f} s"))
    say(row(naive, f"fake server CPU {naive_server_cpu:.2f} s"))
    say(f"  wall time, cache/naive = {cached.seconds / naive.seconds:.3f}")
    return passed


# --- run ----------------------------------------------------------------------------------


@contextmanager
def fake_cluster(args: argparse.Namespace, cpus: set[int]) -> Iterator[tuple[Cluster, str]]:
    server = FakeServer(cpus, args.work / "fake-server.pid")
    try:
        info = server.ask("setup", pods=max(args.pods, 1000), namespaces=10, accounts=20,
                          kubeconfig=str(args.work / "kubeconfig"))
        url = str(info["url"])
        if not url.startswith("https://127.0.0.1:"):
            raise RuntimeError(f"the fake API server is not on loopback: {url}")
        refs = [[str(p) for p in ref] for ref in info["pods"]]
        where = ",".join(str(c) for c in info["cpus"])
        yield Cluster(server, [(r[0], r[1]) for r in refs], refs), f"{url}, CPU(s) {where}"
    finally:
        server.close()
        (args.work / "fake-server.pid").unlink(missing_ok=True)


async def run(args: argparse.Namespace, bench_cpu: int, server_cpus: set[int]) -> int:
    from kubernetes import client as k8s

    from meshca.infra.kube.api import KubeApi
    from meshca.service.kube_calls import KubeCalls

    task = asyncio.current_task()
    assert task is not None
    # SIGTERM (bench-auth's time limit, or its cleanup) cancels the run at its next await: the
    # finally blocks stop the fake API server and the API-call threads.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    ok = await bench_jwks(args)
    say()
    pool_threads = min(16, int(k8s.Configuration().connection_pool_maxsize))
    with fake_cluster(args, server_cpus) as (cluster, where):
        shared = "" if bench_cpu not in server_cpus else " (shared with the bench: only one CPU)"
        say(f"fake API server: FakeKubeApi in a separate process (pid {cluster.server.pid}) at "
            f"{where}{shared}; {len(cluster.pods)} pods in 10 namespaces, ES256 issuer")
        api = KubeApi.connect("bench", str(args.work / "kubeconfig"))
        # Threads of at most the client's connection-pool size (urllib3 maxsize, 5 x CPUs), so
        # that no call opens a throwaway connection; meshca itself uses 16.
        with ThreadPoolExecutor(max_workers=pool_threads, thread_name_prefix="bench-kube") as pool:
            calls = KubeCalls(api, qps=1e6, burst=1_000_000, pool=pool, metrics=NoAuthMetrics())
            validator = TokenReviewValidator(calls, [AUDIENCE])
            await bench_tokenreview(args, cluster, validator, pool_threads)
            say()
            ok &= await bench_calls(args, cluster, validator)
            threads, allowed = thread_cpus()
    say()
    say(f"bench process: {threads} threads (event loop + {pool_threads} API-call threads) ran on CPU(s) "
        f"{','.join(str(c) for c in sorted(allowed))}")
    say(f"result: {verdict(ok)}")
    return 0 if ok else 1


def cmd_run(args: argparse.Namespace) -> int:
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    bench_cpu = available[0]
    server_cpus = set(available[1:]) or {bench_cpu}
    pinned = pin({bench_cpu})
    say(f"bench-auth: python {sys.version.split()[0]}, {len(available)} CPU(s) available; bench process "
        f"pid {os.getpid()} {pinned}")
    say("timing: time.perf_counter around every validation; rate = count / wall time of the whole "
        "pass (fixed counts, warm-up first)")
    say()
    started = time.perf_counter()
    try:
        status = asyncio.run(run(args, bench_cpu, server_cpus))
    except RuntimeError as exc:
        return fail(str(exc))
    except asyncio.CancelledError:
        fail("stopped by SIGTERM")
        return 143
    say(f"total {time.perf_counter() - started:.1f} s")
    return status


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="measure and report")
    r.add_argument("--work", type=Path, required=True, help="scratch directory (kubeconfig, pid file)")
    r.add_argument("--jwks-tokens", type=positive, default=4000, help="distinct jwks tokens per algorithm")
    r.add_argument("--warmup", type=positive, default=400, help="jwks warm-up tokens")
    r.add_argument("--cached-rounds", type=positive, default=50, help="passes over the cached tokens")
    r.add_argument("--review-seq", type=positive, default=1000, help="cold TokenReviews one at a time")
    r.add_argument("--review-tokens", type=positive, default=2000, help="cold TokenReviews, concurrent")
    r.add_argument("--review-cached", type=positive, default=1000, help="tokens behind the cache")
    r.add_argument("--review-warmup", type=positive, default=128, help="tokenreview warm-up tokens")
    r.add_argument("--concurrency", type=positive, default=64, help="validations gathered at a time")
    r.add_argument("--pods", type=positive, default=1000, help="pods in the calls simulation")
    r.add_argument("--per-pod", type=positive, default=10, help="CSR authentications per pod")
    r.set_defaults(func=cmd_run)
    f = sub.add_parser("fake-server", help="FakeKubeApi driven over stdin/stdout (internal)")
    f.add_argument("--cpus", default="", help="comma-separated CPUs to pin to")
    f.set_defaults(func=cmd_fake_server)
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
