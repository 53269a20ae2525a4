"""Token authentication against Kubernetes, end to end: the real `meshca serve` over gRPC+TLS,
talking through the real `kubernetes` client to in-test API servers (tests/fakes/kube_api.py).

Covered: every `--token-validation` mode (jwks with discovery through the API server or over
HTTPS OIDC discovery, tokenreview, both); bad tokens of every kind, each UNAUTHENTICATED with
a reason and no token material; the token cache at scale (1,000 pods x 10 CSRs), coalescing,
the negative cache and cache expiry; the client-side rate limit and 429 retries; issuer key
rotation; several clusters; pod binding; node-agent impersonation and its audit trail; metrics.

Servers are started once per module, two at a time in the background, in the order the tests
need them; the fakes are module-scoped too and every test that breaks one (faults, going down,
deleting objects) puts it back.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import func, select

from meshca.core import jwt
from meshca.gen.istio.v1.auth import ca_pb2, ca_pb2_grpc
from meshca.infra.db.engine import open_engine
from meshca.infra.db.schema import issued_certificates
from tests.fakes.kube_api import TOKENREVIEWS_PATH, FakeKubeApi
from tests.support import AdminClient, MeshcaProcess, admin_token, csr_pem, start_meshca

TRUST_DOMAIN = "cluster.local"
NS = "shop"
NODE_AGENT = ("kube-system", "ztunnel")
REVIEW = ("POST", "tokenreviews")
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
NEGATIVE_TTL = 3.0  # seconds: short for the test, long enough for 20 refusals on a loaded machine
API_REJECTS = "did not authenticate"  # meshca's words when a TokenReview says no

Metadata = list[tuple[str, str]]


def spiffe(namespace: str, account: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{account}"


# ---- servers ------------------------------------------------------------------------------

class Servers:
    """`meshca serve` processes by name, started two at a time in the background in the order
    given; `get` starts one at once if its turn has not come yet."""

    def __init__(self, root: Path, specs: dict[str, list[str]]) -> None:
        self._root = root
        self._specs = specs
        self._lock = threading.Lock()
        self.started_at: dict[str, float] = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="meshca-start")
        self._futures: dict[str, Future[MeshcaProcess]] = {
            name: self._pool.submit(self._start, name) for name in specs}

    def _start(self, name: str) -> MeshcaProcess:
        server = start_meshca(self._root / name, *self._specs[name], timeout=180)
        self.started_at[name] = time.monotonic()
        return server

    def get(self, name: str) -> MeshcaProcess:
        inline = False
        with self._lock:
            future = self._futures[name]
            if future.cancel():
                future = self._futures[name] = Future()
                inline = True
        if inline:
            try:
                future.set_result(self._start(name))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever asks for it
                future.set_exception(exc)
        return future.result(timeout=240)

    def running(self) -> list[tuple[str, MeshcaProcess]]:
        with self._lock:
            futures = dict(self._futures)
        return [(name, f.result()) for name, f in futures.items()
                if f.done() and not f.cancelled() and f.exception() is None]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda named: named[1].stop(), self.running()))


@dataclass
class World:
    """The fakes, the servers, and what the tests sent (checked against the logs at the end)."""

    root: Path
    east: FakeKubeApi  # the local cluster of most servers
    west: FakeKubeApi  # a second cluster, and a foreign issuer for the east servers
    rot: FakeKubeApi  # only for key rotation
    meter: FakeKubeApi  # only for the metrics test, so its counts are exact
    big: FakeKubeApi  # only for the scale test
    servers: Servers = field(init=False)
    sent: set[str] = field(default_factory=set)
    channels: list[grpc.Channel] = field(default_factory=list)
    pinned: dict[int, list[grpc.Channel]] | None = None
    _n: Iterator[int] = field(default_factory=itertools.count)

    def unique(self, prefix: str) -> str:
        return f"{prefix}-{next(self._n)}"

    def pod(self, account: str = "web", node: str = "n1", kube: FakeKubeApi | None = None) -> str:
        name = self.unique(account)
        (kube or self.east).add_pod(NS, name, service_account=account, node=node)
        return name

    def token(self, account: str = "web", *, kube: FakeKubeApi | None = None, **kw: Any) -> str:
        """A pod-bound token of shop/<account>, for a new pod on node n1."""
        kube = kube or self.east
        return kube.mint(NS, account, pod=self.pod(account, kube=kube), **kw)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("kube-auth")
    with contextlib.ExitStack() as stack:
        east, west, rot, meter, big = (stack.enter_context(FakeKubeApi()) for _ in range(5))
        for account in ("web", "db", "admin", "cart"):
            east.add_service_account(NS, account)
        east.add_service_account(*NODE_AGENT)
        east.add_pod(NODE_AGENT[0], "ztunnel-n1", service_account=NODE_AGENT[1], node="n1")
        east.add_pod(NODE_AGENT[0], "ztunnel-n2", service_account=NODE_AGENT[1], node="n2")
        east.add_pod(NS, "web-1", service_account="web", node="n1")
        east.add_pod(NS, "db-1", service_account="db", node="n2")  # shop/db runs on n2 only
        for kube in (west, rot, meter):
            kube.add_service_account(NS, "web")
        kubeconfig = {name: str(kube.kubeconfig(root / f"{name}.kubeconfig"))
                      for name, kube in (("east", east), ("west", west), ("rot", rot),
                                         ("meter", meter), ("big", big))}
        east_ca = root / "east-ca.pem"
        east_ca.write_text(east.ca_pem)
        # Refusals are summarised per interval (tests/security/test_audit_refusals.py); a short
        # one lets the impersonation test read them back.
        node_agent = ["--trusted-node-account", "/".join(NODE_AGENT), "--audit-refusal-interval", "0.5s"]
        local = ["--kubeconfig", kubeconfig["east"]]
        specs = {  # in the order the tests below first need them
            "jwks": [*local, "--token-validation", "jwks", *node_agent],
            "jwks-https": ["--token-validation", "jwks", "--token-issuer", east.issuer,
                           "--token-issuer-ca", str(east_ca)],
            # A short negative cache: its expiry is waited for (the unit tests cover the 5 s
            # default on a fake clock).
            "tokenreview": [*local, "--token-validation", "tokenreview", *node_agent,
                            "--token-negative-cache-ttl", f"{NEGATIVE_TTL:g}s"],
            "both": [*local, "--token-validation", "both"],
            "podbinding": [*local, "--token-validation", "jwks", "--verify-pod-binding"],
            "ratelimit": [*local, "--token-validation", "tokenreview", "--kube-qps", "5",
                          "--kube-burst", "1", "--token-cache-ttl", "2s"],
            "rotation": ["--kubeconfig", kubeconfig["rot"], "--token-validation", "jwks"],
            "multi-jwks": [*local, "--cluster-id", "east", "--cluster", f"west={kubeconfig['west']}"],
            "multi-tokenreview": [*local, "--cluster-id", "east", "--cluster",
                                  f"west={kubeconfig['west']}", "--token-validation", "tokenreview"],
            "metrics": ["--kubeconfig", kubeconfig["meter"], "--token-validation", "tokenreview"],
            # 10,000 CSRs from one address as fast as possible: no issuance rate limits.
            "scale": ["--kubeconfig", kubeconfig["big"], "--token-validation", "tokenreview",
                      "--workers", "2", "--kube-qps", "400", "--kube-burst", "100",
                      "--issuance-rate-per-identity", "off", "--issuance-rate-per-source", "off"],
        }
        w = World(root, east, west, rot, meter, big)
        w.servers = Servers(root / "servers", specs)
        stack.callback(w.servers.close)
        try:
            yield w
        finally:
            for channel in w.channels:
                channel.close()


# ---- calling meshca -----------------------------------------------------------------------

def bearer(token: str) -> Metadata:
    return [("authorization", f"Bearer {token}")]


def tokens_in(metadata: Sequence[tuple[str, str]]) -> list[str]:
    values = [v for k, v in metadata if k == "authorization"]
    return [v.removeprefix("Bearer ") for v in values]


def issue(world: World, server: MeshcaProcess, metadata: Metadata, *,
          struct: dict[str, Any] | None = None, channel: grpc.Channel | None = None) -> list[str]:
    world.sent.update(tokens_in(metadata))
    return server.create_certificate(csr_pem(), metadata=metadata, struct=struct, channel=channel)


def refusal(world: World, server: MeshcaProcess, metadata: Metadata, *,
            struct: dict[str, Any] | None = None) -> grpc.RpcError:
    """The RpcError of a call that must be UNAUTHENTICATED without any token material in it."""
    with pytest.raises(grpc.RpcError) as info:
        issue(world, server, metadata, struct=struct)
    error = info.value
    details = error.details() or ""
    assert error.code() == UNAUTHENTICATED, (error.code(), details)
    assert details.strip(), "an UNAUTHENTICATED status must say why"
    assert_no_token_material(details, metadata)
    return error


def assert_no_token_material(text: str, metadata: Sequence[tuple[str, str]]) -> None:
    for token in tokens_in(metadata):
        for part in token.split("."):
            assert len(part) < 8 or part not in text, f"token material echoed: {text!r}"


def leaf_of(chain: Sequence[str]) -> x509.Certificate:
    assert len(chain) >= 2, "Istio clients reject a chain of fewer than two elements"
    return x509.load_pem_x509_certificate(chain[0].encode())


def spiffe_id_of(cert: x509.Certificate) -> str:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    (value,) = san.get_values_for_type(x509.UniformResourceIdentifier)
    return value


def issued_row(server: MeshcaProcess, cert: x509.Certificate) -> Any:
    engine = open_engine(server.database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(select(issued_certificates).where(
                issued_certificates.c.serial == f"{cert.serial_number:x}")).one()
    finally:
        engine.dispose()


def _segment(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def claims_of(token: str) -> dict[str, Any]:
    return _segment(token, 1)


def header_of(token: str) -> dict[str, Any]:
    return _segment(token, 0)


def b64json(value: object) -> str:
    return jwt.b64url_encode(json.dumps(value).encode())


def new_channel(server: MeshcaProcess) -> grpc.Channel:
    """A channel with its own TCP connection (grpc shares subchannels between equal channels)."""
    return grpc.secure_channel(
        server.grpc_addr, grpc.ssl_channel_credentials(server.bundle_pem),
        options=[("grpc.ssl_target_name_override", "localhost"),
                 ("grpc.use_local_subchannel_pool", 1)])


_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(server: MeshcaProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://{server.metrics_addr}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            labels = frozenset(_LABEL.findall(match.group(2) or ""))
            samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def metric(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
           **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def audit_entries(server: MeshcaProcess, after: int = 0) -> list[dict[str, Any]]:
    client, token = AdminClient(server), admin_token(server)
    entries: list[dict[str, Any]] = []
    cursor: str | None = str(after) if after else None
    while True:
        path = "/v1/audit?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(path, token=token)
        assert response.status == 200, response.body
        page = response.json()
        entries += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return entries


def _wait_for(outcome: Callable[[], bool], seconds: float, every: float = 0.2) -> float:
    """Poll `outcome` until it holds; how long that took."""
    began = time.monotonic()
    while not outcome():
        assert time.monotonic() - began < seconds, f"not within {seconds}s"
        time.sleep(every)
    return time.monotonic() - began


# ---- 1. every validation mode ---------------------------------------------------------------

@pytest.mark.parametrize("mode", ["jwks", "jwks-https", "tokenreview", "both"])
def test_each_validation_mode_issues_and_records_the_pod(world: World, mode: str) -> None:
    server = world.servers.get(mode)
    pod = world.pod("web")
    token = world.east.mint(NS, "web", pod=pod)
    leaf = leaf_of(issue(world, server, bearer(token)))
    assert spiffe_id_of(leaf) == spiffe(NS, "web")
    row = issued_row(server, leaf)
    assert (row.spiffe_id, row.namespace, row.service_account) == (spiffe(NS, "web"), NS, "web")
    assert (row.pod_name, row.pod_uid) == (pod, world.east.pod_uid(NS, pod))


# ---- 2. bad tokens ------------------------------------------------------------------------

Build = Callable[[World], contextlib.AbstractContextManager[Metadata]]
Expect = dict[str, tuple[str, int]]  # mode -> (words in the status details, TokenReviews spent)
MODE_SERVER = {"jwks": "jwks", "tokenreview": "tokenreview", "both": "both",
               "podbinding": "podbinding"}


@dataclass(frozen=True)
class BadToken:
    id: str
    build: Build
    expect: Expect


def sends(make: Callable[[World], Metadata]) -> Build:
    @contextlib.contextmanager
    def build(world: World) -> Iterator[Metadata]:
        yield make(world)
    return build


def token(make: Callable[[World], str]) -> Build:
    return sends(lambda world: bearer(make(world)))


def anywhere(words: str) -> Expect:
    """Refused before any key or API server is asked, whatever the mode."""
    return {"jwks": (words, 0), "tokenreview": (words, 0), "both": (words, 0)}


def local(words: str) -> Expect:
    """Refused by local verification; in tokenreview mode by the API server (one call)."""
    return {"jwks": (words, 0), "tokenreview": (API_REJECTS, 1), "both": (words, 0)}


def alg_none(world: World) -> str:
    body = world.token().split(".")[1]
    return f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{body}."


def hs256_with_public_key(world: World) -> str:
    """HMAC keyed with the issuer's public key: the classic algorithm-confusion forgery."""
    kid = world.east.current_kid
    secret = world.east.public_keys[kid].public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    head, body = b64json({"alg": "HS256", "typ": "JWT", "kid": kid}), world.token().split(".")[1]
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{jwt.b64url_encode(mac)}"


def signed_by_stranger(world: World, kid: str) -> str:
    return jwt.sign(claims_of(world.token()), ec.generate_private_key(ec.SECP256R1()), kid)


def bad_base64(world: World) -> str:
    head, body, signature = world.token().split(".")
    return f"{head}.{body[:16]}*!{body[16:]}.{signature}"


def deleted_pod(world: World) -> str:
    pod = world.pod("web")
    minted = world.east.mint(NS, "web", pod=pod)
    world.east.delete_pod(NS, pod)
    return minted


def deleted_account(world: World) -> str:
    account = world.unique("gone")
    world.east.add_service_account(NS, account)
    minted = world.east.mint(NS, account)
    world.east.delete_service_account(NS, account)
    return minted


@contextlib.contextmanager
def api_down(world: World) -> Iterator[Metadata]:
    minted = world.token()
    world.east.go_down()
    try:
        yield bearer(minted)
    finally:
        world.east.come_up()


def api_fault(status: int, where: str = "tokenreviews") -> Build:
    @contextlib.contextmanager
    def build(world: World) -> Iterator[Metadata]:
        pod = world.pod("web")
        minted = world.east.mint(NS, "web", pod=pod)
        world.east.fail(TOKENREVIEWS_PATH if where == "tokenreviews"
                        else f"/api/v1/namespaces/{NS}/pods/{pod}", status)
        try:
            yield bearer(minted)
        finally:
            world.east.clear_faults()
    return build


BAD_TOKENS = [
    BadToken("expired", token(lambda w: w.token(now=time.time() - 7200, ttl=3600)), local("expired")),
    BadToken("not-yet-valid", token(lambda w: w.token(now=time.time() + 600)), local("not valid yet")),
    BadToken("wrong-audience", token(lambda w: w.token(audiences=("vault",))), local("audience")),
    BadToken("token-of-another-cluster", token(lambda w: w.token(kube=w.west)), local("key id")),
    BadToken("issuer-claim-of-another-cluster",
             token(lambda w: w.token(extra_claims={"iss": w.west.issuer})), local("issuer")),
    BadToken("alg-none", token(alg_none), anywhere("algorithm")),
    BadToken("hs256-keyed-with-issuer-public-key", token(hs256_with_public_key), anywhere("algorithm")),
    BadToken("unknown-kid", token(lambda w: signed_by_stranger(w, "rogue-" + secrets.token_hex(8))),
             local("key id")),
    BadToken("known-kid-forged-signature",
             token(lambda w: signed_by_stranger(w, w.east.current_kid)), local("signature")),
    BadToken("legacy-secret-token", token(lambda w: w.east.mint(NS, "web", legacy=True)),
             anywhere("legacy")),
    BadToken("bad-base64", token(bad_base64), anywhere("base64")),
    BadToken("larger-than-16KiB",
             token(lambda w: w.token(extra_claims={"padding": "x" * (17 * 1024)})),
             anywhere("longer than")),
    BadToken("no-bearer-prefix", sends(lambda w: [("authorization", w.token())]), anywhere("Bearer ")),
    BadToken("lowercase-bearer", sends(lambda w: [("authorization", "bearer " + w.token())]),
             anywhere("Bearer ")),
    BadToken("two-authorization-values", sends(lambda w: bearer(w.token()) + bearer(w.token())),
             anywhere("more than one")),
    BadToken("no-authorization", sends(lambda w: []), anywhere("authorization")),
    BadToken("sub-not-a-service-account",
             token(lambda w: w.token(extra_claims={"sub": "system:node:n1"})),
             local("not a Kubernetes service account")),
    BadToken("sub-disagrees-with-kubernetes-io-claim",
             token(lambda w: w.token(extra_claims={"sub": f"system:serviceaccount:{NS}:admin"})),
             local("disagree")),
    BadToken("deleted-pod", token(deleted_pod),
             {"podbinding": ("no longer exists", 0), "tokenreview": (API_REJECTS, 1),
              "both": (API_REJECTS, 1)}),
    BadToken("deleted-service-account", token(deleted_account),
             {"tokenreview": (API_REJECTS, 1), "both": (API_REJECTS, 1)}),
    BadToken("api-server-down", api_down,
             {"tokenreview": ("cannot confirm", 0), "both": ("cannot confirm", 0),
              "podbinding": ("cannot look up the token's pod", 0)}),
    *(BadToken(f"api-answers-{status}", api_fault(status),
               {"tokenreview": ("cannot confirm", 1), "both": ("cannot confirm", 1)})
      for status in (401, 403, 500)),
    BadToken("pod-lookup-forbidden", api_fault(403, where="pod"),
             {"podbinding": ("cannot look up the token's pod", 0)}),
]
BAD_CASES = [pytest.param(case, mode, id=f"{case.id}[{mode}]")
             for case in BAD_TOKENS for mode in case.expect]


@pytest.mark.parametrize(("case", "mode"), BAD_CASES)
def test_bad_token_is_unauthenticated(world: World, case: BadToken, mode: str) -> None:
    server = world.servers.get(MODE_SERVER[mode])
    words, reviews = case.expect[mode]
    issued, calls = server.issued_count(), world.east.calls[REVIEW]
    with case.build(world) as metadata:
        error = refusal(world, server, metadata)
    assert words.lower() in (error.details() or "").lower(), error.details()
    assert server.issued_count() == issued, "a refused request recorded a certificate"
    assert world.east.calls[REVIEW] - calls == reviews


@pytest.mark.parametrize(("mode", "fault"), [
    ("tokenreview", "500"), ("tokenreview", "down"), ("both", "500"), ("both", "down"),
    ("podbinding", "pod-403"), ("podbinding", "down")])
def test_api_server_trouble_is_not_remembered(world: World, mode: str, fault: str) -> None:
    """A refusal because the API server failed says nothing about the token: once the API
    server answers again, the same token works at once (no negative cache, no pod cache)."""
    server = world.servers.get(MODE_SERVER[mode])
    pod = world.pod("web")
    minted = world.east.mint(NS, "web", pod=pod)
    before = scrape(server)
    if fault == "down":
        world.east.go_down()
    else:
        world.east.fail(f"/api/v1/namespaces/{NS}/pods/{pod}" if fault == "pod-403"
                        else TOKENREVIEWS_PATH, 403 if fault == "pod-403" else 500)
    try:
        refusal(world, server, bearer(minted))
    finally:
        world.east.clear_faults()
        world.east.come_up()
    leaf = leaf_of(issue(world, server, bearer(minted)))
    assert issued_row(server, leaf).pod_uid == world.east.pod_uid(NS, pod)
    after = scrape(server)
    name, kind = "meshca_kube_api_requests_total", "pod" if mode == "podbinding" else "tokenreview"
    assert metric(after, name, kind=kind, outcome="error") - metric(before, name, kind=kind,
                                                                    outcome="error") == 1
    reason = "meshca_authentication_failures_total"
    assert metric(after, reason, reason="api_unavailable") - metric(
        before, reason, reason="api_unavailable") == 1


# ---- 4./5. coalescing and the negative cache ----------------------------------------------

def test_concurrent_csrs_with_one_new_token_make_one_tokenreview(world: World) -> None:
    server = world.servers.get("tokenreview")  # one worker
    minted, csr = world.token(), csr_pem()
    world.sent.add(minted)
    channel = server.channel()
    issue(world, server, bearer(world.token()))  # connection and TLS are warm
    calls = world.east.calls[REVIEW]
    start = threading.Barrier(50)

    def one(_: int) -> int:
        start.wait()
        return len(server.create_certificate(csr, token=minted, channel=channel))

    world.east.delay(TOKENREVIEWS_PATH, 0.5)
    try:
        with ThreadPoolExecutor(50) as pool:
            lengths = list(pool.map(one, range(50)))
    finally:
        world.east.clear_faults()
    assert all(n >= 2 for n in lengths)
    assert world.east.calls[REVIEW] - calls == 1
    coalesced = metric(scrape(server), "meshca_token_cache_requests_total", outcome="coalesced")
    print(f"coalesced cache look-ups so far: {coalesced:.0f}")


def test_rejected_token_retried_costs_one_tokenreview_until_the_negative_cache_expires(
        world: World) -> None:
    server = world.servers.get("tokenreview")
    rejected = world.token(audiences=("vault",))  # only the API server can tell, in this mode
    calls = world.east.calls[REVIEW]
    began = time.monotonic()
    for _ in range(20):
        refusal(world, server, bearer(rejected))
    assert world.east.calls[REVIEW] - calls == 1

    def reviewed_again() -> bool:
        refusal(world, server, bearer(rejected))
        return world.east.calls[REVIEW] - calls >= 2

    try:
        _wait_for(reviewed_again, NEGATIVE_TTL + 3, every=0.1)
    except AssertionError:
        raise AssertionError("the negative cache never expired") from None
    assert world.east.calls[REVIEW] - calls == 2
    assert time.monotonic() - began >= NEGATIVE_TTL, "the refusal was not remembered"


def test_a_caller_giving_up_does_not_fail_the_others_waiting_on_its_tokenreview(
        world: World) -> None:
    server = world.servers.get("tokenreview")
    minted, channel = world.token(), server.channel()
    world.sent.add(minted)
    issue(world, server, bearer(world.token()))  # connection and TLS are warm
    stub = ca_pb2_grpc.IstioCertificateServiceStub(channel)
    request = ca_pb2.IstioCertificateRequest(csr=csr_pem())

    def call(timeout: float) -> str:
        try:
            stub.CreateCertificate(request, metadata=bearer(minted), timeout=timeout)
        except grpc.RpcError as exc:
            return str(exc.code().name)
        return "OK"

    world.east.delay(TOKENREVIEWS_PATH, 1.0)
    try:
        with ThreadPoolExecutor(6) as pool:
            calls = world.east.calls[REVIEW]
            leader = pool.submit(call, 0.3)  # starts the TokenReview, then gives up
            _wait_for(lambda: world.east.calls[REVIEW] > calls, 3.0, every=0.01)
            followers = [pool.submit(call, 3.0) for _ in range(5)]
            assert leader.result() == "DEADLINE_EXCEEDED"
            outcomes = [f.result() for f in followers]
    finally:
        world.east.clear_faults()
    assert outcomes == ["OK"] * 5


# ---- 6. the client-side rate limit and 429 --------------------------------------------------

def test_rate_limit_queues_calls_instead_of_failing_them(world: World) -> None:
    server = world.servers.get("ratelimit")  # --kube-qps 5 --kube-burst 1
    tokens = [world.token() for _ in range(15)]
    world.sent.update(tokens)
    csr, channel = csr_pem(), server.channel()
    issue(world, server, bearer(world.token()))  # warm, and the bucket is empty now
    time.sleep(0.4)  # let it refill its one token
    calls = world.east.calls[REVIEW]
    start = threading.Barrier(len(tokens))

    def one(minted: str) -> str:
        start.wait()
        try:
            server.create_certificate(csr, token=minted, channel=channel)
        except grpc.RpcError as exc:
            return str(exc.code().name)
        return "OK"

    began = time.monotonic()
    with ThreadPoolExecutor(len(tokens)) as pool:
        outcomes = Counter(pool.map(one, tokens))
    elapsed = time.monotonic() - began
    print(f"15 distinct tokens at 5 qps, burst 1: {elapsed:.2f}s, {dict(outcomes)}")
    assert outcomes == {"OK": 15}
    assert world.east.calls[REVIEW] - calls == 15
    assert elapsed >= 2.5, "15 calls at 5/s with a burst of 1 cannot take less than 2.8 s"


def test_429_with_retry_after_is_retried_and_the_csr_succeeds(world: World) -> None:
    server = world.servers.get("ratelimit")
    minted = world.token()
    calls = world.east.calls[REVIEW]
    world.east.fail(TOKENREVIEWS_PATH, 429, times=1, retry_after=1)
    try:
        began = time.monotonic()
        chain = issue(world, server, bearer(minted))
        elapsed = time.monotonic() - began
    finally:
        world.east.clear_faults()
    assert spiffe_id_of(leaf_of(chain)) == spiffe(NS, "web")
    assert world.east.calls[REVIEW] - calls == 2
    assert elapsed >= 0.9, "the retry did not wait for Retry-After"


def test_validated_token_is_reviewed_again_after_the_cache_ttl(world: World) -> None:
    server = world.servers.get("ratelimit")  # --token-cache-ttl 2s
    minted = world.token()
    calls = world.east.calls[REVIEW]
    issue(world, server, bearer(minted))
    cached_by = time.monotonic()  # the server cached the token before it answered
    issue(world, server, bearer(minted))
    assert world.east.calls[REVIEW] - calls == 1
    time.sleep(max(0.0, cached_by + 2.05 - time.monotonic()))  # --token-cache-ttl 2s
    issue(world, server, bearer(minted))
    assert world.east.calls[REVIEW] - calls == 2, "the token cache ignored --token-cache-ttl"


# ---- 8. several clusters ------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["multi-jwks", "multi-tokenreview"])
def test_token_of_another_cluster_needs_its_clusterid(world: World, mode: str) -> None:
    server = world.servers.get(mode)  # --cluster-id east --cluster west=<kubeconfig of west>
    pod = world.pod("web", kube=world.west)
    west_token = world.west.mint(NS, "web", pod=pod)
    leaf = leaf_of(issue(world, server, [*bearer(west_token), ("clusterid", "west")]))
    assert spiffe_id_of(leaf) == spiffe(NS, "web")
    assert (issued_row(server, leaf).pod_name, issued_row(server, leaf).pod_uid) == (
        pod, world.west.pod_uid(NS, pod))

    refusal(world, server, bearer(west_token))  # no clusterid: the local cluster, east
    refusal(world, server, [*bearer(west_token), ("clusterid", "east")])
    unknown = refusal(world, server, [*bearer(west_token), ("clusterid", "nowhere")])
    assert "cluster" in (unknown.details() or "")

    east_token = world.token()
    refusal(world, server, [*bearer(east_token), ("clusterid", "west")])
    for metadata in (bearer(east_token), [*bearer(east_token), ("clusterid", "east")]):
        assert spiffe_id_of(leaf_of(issue(world, server, metadata))) == spiffe(NS, "web")


# ---- 9. pod binding -----------------------------------------------------------------------



def test_pod_bound_token_dies_with_its_pod(world: World) -> None:
    server = world.servers.get("podbinding")  # jwks + --verify-pod-binding
    pod = world.pod("web")
    old = world.east.mint(NS, "web", pod=pod)
    leaf = leaf_of(issue(world, server, bearer(old)))
    assert issued_row(server, leaf).pod_uid == world.east.pod_uid(NS, pod)

    def accepted(minted: str) -> bool:
        try:
            issue(world, server, bearer(minted))
        except grpc.RpcError as exc:
            assert exc.code() == UNAUTHENTICATED, exc.details()
            assert "no longer exists" in (exc.details() or "")
            return False
        return True

    world.east.delete_pod(NS, pod)
    took = _wait_for(lambda: not accepted(old), 7.0)  # pod look-ups are remembered for 5 s
    print(f"refused {took:.1f}s after the pod was deleted")
    assert not accepted(old) and not accepted(old)

    uid = world.east.add_pod(NS, pod, service_account="web", node="n1")  # same name, new uid
    new = world.east.mint(NS, "web", pod=pod)
    _wait_for(lambda: accepted(new), 7.0)
    assert not accepted(old), "a recreated pod revived the token of its predecessor"
    leaf = leaf_of(issue(world, server, bearer(new)))
    assert issued_row(server, leaf).pod_uid == uid


# ---- 10. impersonation by a node agent ------------------------------------------------------

@pytest.mark.parametrize("mode", ["jwks", "tokenreview"])
def test_node_agent_impersonation(world: World, mode: str) -> None:
    server = world.servers.get(mode)  # --trusted-node-account kube-system/ztunnel
    watermark = max((e["id"] for e in audit_entries(server)), default=0)
    agent = world.east.mint(*NODE_AGENT, pod="ztunnel-n1")  # bound to a pod on node n1
    assert claims_of(agent)["kubernetes.io"]["node"]["name"] == "n1"

    def asks_for(identity: object) -> dict[str, Any]:
        return {"ImpersonatedIdentity": identity}

    leaf = leaf_of(issue(world, server, bearer(agent), struct=asks_for(spiffe(NS, "web"))))
    assert spiffe_id_of(leaf) == spiffe(NS, "web")  # shop/web has pod web-1 on n1
    row = issued_row(server, leaf)
    assert (row.namespace, row.service_account) == (NS, "web")

    refusals = {
        "no pod of that identity runs on the caller's node":
            (bearer(agent), spiffe(NS, "db")),  # shop/db runs on n2 only
        "may not use ImpersonatedIdentity":
            (bearer(world.token("web")), spiffe(NS, "db")),  # a workload is no node agent
        "not a workload SPIFFE ID of this trust domain":
            (bearer(agent), "spiffe://evil.example/ns/shop/sa/web"),
        "not a workload SPIFFE ID": (bearer(agent), "shop/web"),
    }
    issued = server.issued_count()
    for words, (metadata, identity) in refusals.items():
        error = refusal(world, server, metadata, struct=asks_for(identity))
        assert words in (error.details() or ""), error.details()
    odd: tuple[object, ...] = (f"spiffe://{TRUST_DOMAIN}/ns/shop",
                               f"spiffe://{TRUST_DOMAIN}/ns/shop/sa/web/x", 42)
    for oddity in odd:
        error = refusal(world, server, bearer(agent), struct=asks_for(oddity))
        assert "not a workload SPIFFE ID" in (error.details() or "")
    assert server.issued_count() == issued

    def ours(entry: dict[str, Any]) -> bool:  # other tests' refusals may land late
        detail = entry["detail"] or ""
        return entry["outcome"] == "refused" and (
            "ImpersonatedIdentity" in detail or "no pod of that identity" in detail)

    def tallied(entry: dict[str, Any]) -> int:  # "N refusals: <reason> (…)"
        return int((entry["detail"] or "0").split(" ", 1)[0])

    deadline = time.monotonic() + 10  # summaries are written once per refusal interval
    while True:
        entries = audit_entries(server, watermark)
        refused = [e for e in entries if ours(e)]
        if sum(map(tallied, refused)) >= len(refusals) + 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert {e["action"] for e in refused} == {"CreateCertificate"}
    granted = [e for e in entries if e["action"] == "CreateCertificate.impersonate"]
    assert [(e["actor"], e["target"], e["outcome"]) for e in granted] == [
        (spiffe(*NODE_AGENT), spiffe(NS, "web"), "ok")]
    assert "n1" in (granted[0]["detail"] or "")
    for words in refusals:
        assert any(words in (e["detail"] or "") for e in refused), (words, refused)
    assert sum(map(tallied, refused)) == len(refusals) + 3
    for entry in entries:
        assert_no_token_material(json.dumps(entry), bearer(agent))


# ---- 7. issuer key rotation -----------------------------------------------------------------

def test_rotated_issuer_key_is_fetched_once_on_an_unknown_kid(world: World) -> None:
    server = world.servers.get("rotation")  # jwks, keys discovered through the API server
    kube = world.rot
    issue(world, server, bearer(world.token(kube=kube)))
    # Refetches are allowed once per 10 s; the last one was the start-up fetch.
    time.sleep(max(0.0, world.servers.started_at["rotation"] + 11 - time.monotonic()))

    def fetches() -> tuple[int, int]:
        calls = kube.calls
        return calls[("GET", "discovery")], calls[("GET", "jwks")]

    before = fetches()
    new_kid = kube.rotate_key()
    rotated = world.token(kube=kube)
    assert header_of(rotated)["kid"] == new_kid
    leaf = leaf_of(issue(world, server, bearer(rotated)))
    assert spiffe_id_of(leaf) == spiffe(NS, "web")
    after = fetches()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)

    newer_kid = kube.rotate_key()  # a second unknown kid, within 10 s of the refetch
    newer = world.token(kube=kube)
    assert header_of(newer)["kid"] == newer_kid
    error = refusal(world, server, bearer(newer))
    assert "key id" in (error.details() or "")
    forged = jwt.sign(claims_of(newer), ec.generate_private_key(ec.SECP256R1()), "rogue")
    refusal(world, server, bearer(forged))
    assert fetches() == after, "an unknown kid refetched the keys again within 10 s"


# ---- 11. metrics --------------------------------------------------------------------------

def test_metrics_count_cache_api_calls_and_failures(world: World) -> None:
    server = world.servers.get("metrics")  # its own API server, so counts are exact
    kube = world.meter
    start = scrape(server)
    good = [world.token(kube=kube) for _ in range(3)]
    for minted in good:
        for _ in range(4):
            issue(world, server, bearer(minted))  # 1 miss, then 3 hits
    for minted in [world.token(kube=kube, audiences=("vault",)) for _ in range(2)]:
        for _ in range(3):
            refusal(world, server, bearer(minted))  # 1 miss + TokenReview, then 2 negative hits
    refusal(world, server, bearer(kube.mint(NS, "web", legacy=True)))  # miss, no TokenReview
    refusal(world, server, [*bearer(good[0]), ("clusterid", "nowhere")])  # no cache look-up
    end = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return metric(end, name, **labels) - metric(start, name, **labels)

    cache = {o: delta("meshca_token_cache_requests_total", outcome=o)
             for o in ("hit", "miss", "negative_hit", "coalesced")}
    assert cache == {"hit": 9, "miss": 6, "negative_hit": 4, "coalesced": 0}
    reviews = kube.calls[REVIEW]
    assert reviews == 5
    assert metric(end, "meshca_kube_api_requests_total", kind="tokenreview", outcome="ok") == reviews
    assert delta("meshca_kube_api_requests_total", kind="tokenreview", outcome="error") == 0
    assert delta("meshca_kube_api_request_duration_seconds_count") == 5
    failures = {r: delta("meshca_authentication_failures_total", reason=r)
                for r in ("tokenreview", "legacy", "cluster", "invalid", "api_unavailable")}
    assert failures == {"tokenreview": 6, "legacy": 1, "cluster": 1, "invalid": 0, "api_unavailable": 0}
    assert delta("citadel_server_authentication_failure_count") == 8
    assert delta("citadel_server_success_cert_issuance_count") == 12


def test_missing_authorization_is_counted_as_missing(world: World) -> None:
    server = world.servers.get("metrics")
    start = scrape(server)
    refusal(world, server, [])
    end = scrape(server)
    name = "meshca_authentication_failures_total"
    assert metric(end, name, reason="missing") - metric(start, name, reason="missing") == 1


# ---- 3. scale -----------------------------------------------------------------------------

PODS, CSRS_PER_POD, CALLERS = 1000, 10, 32


def worker_channels(world: World, server: MeshcaProcess,
                    per_worker: int = 2) -> dict[int, list[grpc.Channel]]:
    """Channels (one TCP connection each) sorted by the worker process that serves them: each
    channel's first CSR shows up in that worker's meshca_worker_issued_certificates_total."""
    if world.pinned is not None:
        return world.pinned
    world.big.add_service_account("warm", "up")
    metadata = bearer(world.big.mint("warm", "up"))
    pinned: dict[int, list[grpc.Channel]] = {0: [], 1: []}
    for _ in range(60):
        if all(len(c) >= per_worker for c in pinned.values()):
            break
        channel = new_channel(server)
        world.channels.append(channel)
        before = scrape(server)
        issue(world, server, metadata, channel=channel)
        after = scrape(server)
        issued = "meshca_worker_issued_certificates_total"
        (worker,) = [w for w in pinned if metric(after, issued, worker=str(w))
                     > metric(before, issued, worker=str(w))]
        pinned[worker].append(channel)
    assert all(len(c) >= per_worker for c in pinned.values()), "connections all went to one worker"
    world.pinned = {w: c[:per_worker] for w, c in pinned.items()}
    return world.pinned


def test_mass_restart_costs_one_tokenreview_per_pod(world: World) -> None:
    server = world.servers.get("scale")  # tokenreview, --workers 2
    kube = world.big
    for account in range(20):
        kube.add_service_account("scale", f"app-{account}")
    pods = [f"pod-{i:04d}" for i in range(PODS)]
    for i, pod in enumerate(pods):
        kube.add_pod("scale", pod, service_account=f"app-{i % 20}", node=f"node-{i % 10}")
    metadata = [bearer(kube.mint("scale", f"app-{i % 20}", pod=pod)) for i, pod in enumerate(pods)]
    requests = [ca_pb2.IstioCertificateRequest(csr=csr_pem()) for _ in pods]
    # A sidecar keeps its connection, so each pod sticks to one channel; the channels are
    # spread over both worker processes (each has its own token cache).
    channels = [c for group in worker_channels(world, server).values() for c in group]
    stubs = [ca_pb2_grpc.IstioCertificateServiceStub(c) for c in channels]
    calls = kube.calls[REVIEW]

    def one(i: int) -> str:
        try:
            response = stubs[i % len(stubs)].CreateCertificate(requests[i], metadata=metadata[i],
                                                               timeout=120)
        except grpc.RpcError as exc:
            return str(exc.code().name)
        return "OK" if len(response.cert_chain) >= 2 else "SHORT"

    began = time.monotonic()
    with ThreadPoolExecutor(CALLERS) as pool:
        outcomes = Counter(pool.map(one, [i for _ in range(CSRS_PER_POD) for i in range(PODS)]))
    elapsed = time.monotonic() - began
    reviews = kube.calls[REVIEW] - calls
    print(f"{PODS} pods x {CSRS_PER_POD} CSRs over {len(channels)} connections, {CALLERS} callers: "
          f"{elapsed:.1f}s, {reviews} TokenReviews, {dict(outcomes)}")
    assert outcomes == {"OK": PODS * CSRS_PER_POD}
    assert reviews == PODS
    assert elapsed < 60, "the token cache should make this a matter of seconds"

    engine = open_engine(server.database_url)
    try:
        with engine.connect() as connection:
            t = issued_certificates.c
            scale = t.namespace == "scale"
            total = connection.execute(select(func.count()).where(scale)).scalar_one()
            per_pod = connection.execute(select(t.pod_name, t.pod_uid, func.count())
                                         .where(scale).group_by(t.pod_name, t.pod_uid)).all()
    finally:
        engine.dispose()
    assert total == PODS * CSRS_PER_POD
    assert len(per_pod) == PODS
    assert {(name, uid) for name, uid, _ in per_pod} == {(p, kube.pod_uid("scale", p)) for p in pods}
    assert {n for _, _, n in per_pod} == {CSRS_PER_POD}


def test_each_worker_reviews_a_token_at_most_once(world: World) -> None:
    """Each worker process keeps its own token cache (documented): a token whose connections
    land on both workers costs one TokenReview per worker, never one per CSR."""
    server = world.servers.get("scale")
    pinned = worker_channels(world, server)
    world.big.add_service_account("roam", "app")
    world.big.add_pod("roam", "app-1", service_account="app", node="node-0")
    minted = world.big.mint("roam", "app", pod="app-1")
    calls = world.big.calls[REVIEW]
    for _ in range(3):
        for worker in (0, 1):
            issue(world, server, bearer(minted), channel=pinned[worker][0])
    assert world.big.calls[REVIEW] - calls == 2


# ---- finally: the logs --------------------------------------------------------------------

def test_logs_hold_no_traceback_and_no_token_material(world: World) -> None:
    pieces = {p for t in world.sent for p in t.split(".") if len(p) >= 8}
    for name, server in world.servers.running():
        log = server.log_text()
        assert "Traceback" not in log, f"{name}: {log}"
        assert server.process.poll() is None, f"{name} exited"
        leaked = [p for p in pieces if p in log]
        assert not leaked, f"{name} logged token material"

