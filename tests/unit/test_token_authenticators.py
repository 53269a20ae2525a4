"""The token authenticators on in-memory ports and a fake clock: the JWKS and TokenReview
validators and `both`, the calls to an API server (client-side limit, 429 and Retry-After),
the token cache (hits, expiry, the negative cache, coalescing), pod binding and node-agent
impersonation in WorkloadAuthenticator, and the admin API's credential kinds. No server, no
sleeping: waits advance the fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from meshca.core import jwt, templates
from meshca.core.roles import Role
from meshca.core.sa_token import LEGACY_ISSUER, ServiceAccount
from meshca.core.spiffe import SpiffeId
from meshca.errors import AuthenticationError, PermissionDenied
from meshca.service.admin_auth import AdminAuthenticator, Principal
from meshca.service.kube_calls import KubeCalls
from meshca.service.ports import (
    AuditEntry,
    KubeApiPort,
    PodInfo,
    TokenAuthenticator,
    TokenReviewResult,
)
from meshca.service.token_cache import CacheSettings, CachingAuthenticator
from meshca.service.token_validation import BothValidator, JwksValidator, TokenReviewValidator
from meshca.service.workload_auth import POD_CACHE_SECONDS, ClusterAuth, WorkloadAuthenticator
from tests.fakes.admin_tokens import FakeAdminTokens
from tests.fakes.auth_metrics import FakeAuthMetrics
from tests.fakes.clock import FakeClock
from tests.fakes.key_source import FakeKeySource
from tests.fakes.kube_port import FakeKubePort, reviewed
from tests.fakes.workload_tokens import FakeTokenAuthenticator
from tests.unit.pki import NOW, ec_key, make_authority

ISSUER = "https://kubernetes.default.svc"
AUDIENCES = ["istio-ca"]
KEY, OTHER_KEY = ec_key("secp256r1", 40), ec_key("secp256r1", 41)
T0 = int(NOW.timestamp())
T = TypeVar("T")


def claims(namespace: str = "shop", name: str = "web", *, pod: tuple[str, str] | None = None,
           node: str | None = None, ttl: int = 3600, **changes: Any) -> dict[str, Any]:
    k8s: dict[str, Any] = {"namespace": namespace, "serviceaccount": {"name": name, "uid": "u"}}
    if pod is not None:
        k8s["pod"] = {"name": pod[0], "uid": pod[1]}
    if node is not None:
        k8s["node"] = {"name": node, "uid": "n"}
    return {"iss": ISSUER, "sub": f"system:serviceaccount:{namespace}:{name}", "aud": AUDIENCES,
            "iat": T0, "nbf": T0, "exp": T0 + ttl, "kubernetes.io": k8s, **changes}


def mint(namespace: str = "shop", name: str = "web", **kw: Any) -> str:
    return jwt.sign(claims(namespace, name, **kw), KEY, "k1")


class Clock(FakeClock):
    """The fake clock as each consumer reads it: epoch seconds, monotonic, an async sleep."""

    def __init__(self) -> None:
        super().__init__(NOW)

    def epoch(self) -> float:
        return self.now().timestamp()

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4, thread_name_prefix="test-kube") as executor:
        yield executor


@pytest.fixture
def kube() -> FakeKubePort:
    return FakeKubePort()


def calls_for(kube: FakeKubePort, pool: ThreadPoolExecutor, clock: Clock,
              metrics: FakeAuthMetrics | None = None, *, qps: float = 1000,
              burst: int = 1000) -> KubeCalls:
    api: KubeApiPort = kube  # the fake satisfies the port
    return KubeCalls(api, qps=qps, burst=burst, pool=pool, metrics=metrics or FakeAuthMetrics(),
                     monotonic=clock.monotonic, sleep=clock.asleep)


def run(work: Awaitable[T]) -> T:
    async def main() -> T:
        return await work
    return asyncio.run(main())


def refusal(work: Awaitable[object], words: str | None = None) -> AuthenticationError:
    with pytest.raises(AuthenticationError, match=words) as info:
        run(work)
    return info.value


# ---- JwksValidator ------------------------------------------------------------------------

def jwks(clock: Clock, source: FakeKeySource) -> JwksValidator:
    return JwksValidator(source, frozenset(AUDIENCES), 60, now=clock.epoch)


def test_jwks_validates_locally_and_reads_the_pod_and_node(clock: Clock) -> None:
    source = FakeKeySource(ISSUER, {"k1": KEY.public_key()})
    account = run(jwks(clock, source).validate(mint(pod=("web-0", "p-1"), node="n1")))
    assert account == ServiceAccount("shop", "web", pod_name="web-0", pod_uid="p-1",
                                     node_name="n1", expires_at=T0 + 3600)
    assert source.refreshes == 0


def test_jwks_waits_for_the_issuer_and_refuses_uncacheably_while_it_is_unknown(
        clock: Clock) -> None:
    source = FakeKeySource(None)
    error = refusal(jwks(clock, source).validate(mint()), "issuer's keys are not available yet")
    assert (error.reason, error.cacheable, source.refreshes) == ("unknown_key", False, 1)
    source.on_refresh = (ISSUER, {"k1": KEY.public_key()})  # discovery answers now
    assert run(jwks(clock, source).validate(mint())).name == "web"
    assert source.refreshes == 2


def test_jwks_refusals_that_may_heal_are_not_cacheable_the_others_are(clock: Clock) -> None:
    source = FakeKeySource(ISSUER, {"k1": KEY.public_key(), "k2": OTHER_KEY.public_key()})
    validator = jwks(clock, source)
    unknown = refusal(validator.validate(jwt.sign(claims(), KEY, "k9")), "not among")
    assert (unknown.reason, unknown.cacheable) == ("unknown_key", False)  # keys may rotate in
    forged = refusal(validator.validate(jwt.sign(claims(), OTHER_KEY, "k1")), "does not verify")
    assert forged.cacheable
    wrong = refusal(validator.validate(mint(aud=["vault"])), "audience")
    assert (wrong.reason, wrong.cacheable) == ("audience", True)


def test_jwks_reads_time_from_the_injected_clock(clock: Clock) -> None:
    validator = jwks(clock, FakeKeySource(ISSUER, {"k1": KEY.public_key()}))
    token = mint(ttl=600)
    clock.advance(timedelta(seconds=600 + 60))
    assert run(validator.validate(token)).name == "web"  # within the skew
    clock.advance(timedelta(seconds=1))
    assert refusal(validator.validate(token), "expired").reason == "expired"


# ---- KubeCalls ----------------------------------------------------------------------------

def test_calls_queue_behind_the_client_side_limit_instead_of_failing(
        kube: FakeKubePort, pool: ThreadPoolExecutor, clock: Clock) -> None:
    metrics = FakeAuthMetrics()
    calls = calls_for(kube, pool, clock, metrics, qps=5, burst=1)

    async def three() -> list[PodInfo | None]:
        return [await calls.call("pod", lambda: kube.pod("shop", "web-0")) for _ in range(3)]

    assert run(three()) == [None] * 3
    assert clock.slept == [pytest.approx(0.2), pytest.approx(0.2)]  # 1/qps each after the burst
    assert kube.calls["pod"] == 3 and metrics.kube[("pod", True)] == 3


def test_a_429_is_retried_after_its_retry_after_capped_and_then_given_up(
        kube: FakeKubePort, pool: ThreadPoolExecutor, clock: Clock) -> None:
    metrics = FakeAuthMetrics()
    calls = calls_for(kube, pool, clock, metrics)
    kube.add_pod("shop", "web-0", service_account="web")
    kube.fail("pod", 429, times=2, retry_after=2)
    pod = run(calls.call("pod", lambda: kube.pod("shop", "web-0")))
    assert pod is not None and pod.name == "web-0"
    assert clock.slept == [2, 2] and kube.calls["pod"] == 3
    assert (metrics.kube[("pod", False)], metrics.kube[("pod", True)]) == (2, 1)

    clock.slept.clear()
    kube.fail("pod", 429, retry_after=60)  # every time, and longer than meshca waits
    with pytest.raises(Exception, match="429") as info:
        run(calls.call("pod", lambda: kube.pod("shop", "web-0")))
    assert getattr(info.value, "status", None) == 429
    assert clock.slept == [5.0, 5.0] and kube.calls["pod"] == 6  # three attempts in all

    clock.slept.clear()
    kube.fail("pod", 503, times=1)  # not a 429: no retry
    with pytest.raises(Exception, match="503"):
        run(calls.call("pod", lambda: kube.pod("shop", "web-0")))
    assert clock.slept == [] and kube.calls["pod"] == 7


def test_a_429_without_retry_after_waits_a_second(
        kube: FakeKubePort, pool: ThreadPoolExecutor, clock: Clock) -> None:
    calls = calls_for(kube, pool, clock)
    kube.fail("tokenreview", 429, times=1)
    run(calls.call("tokenreview", lambda: kube.token_review("t", AUDIENCES)))
    assert clock.slept == [1.0]


# ---- TokenReviewValidator and both ----------------------------------------------------------

def review(kube: FakeKubePort, pool: ThreadPoolExecutor, clock: Clock) -> TokenReviewValidator:
    return TokenReviewValidator(calls_for(kube, pool, clock), AUDIENCES)


def test_tokenreview_asks_the_api_server_and_reads_its_pod_and_node(
        kube: FakeKubePort, pool: ThreadPoolExecutor, clock: Clock) -> None:
    pod = kube.add_pod("shop", "web-0", service_account="web")
    token = mint(pod=("web-0", pod.uid))
    kube.reviews[token] = reviewed("shop", "web", pod=pod, node="n1", audiences=("istio-ca",))
    account = run(review(kube, pool, clock).validate(token))
    assert account == ServiceAccount("shop", "web", pod_name="web-0", pod_uid=pod.uid,
                                     node_name="n1", expires_at=T0 + 3600)
    assert kube.asked_audiences == [AUDIENCES]


@pytest.mark.parametrize(("token", "words", "reason"), [
    ("not-a-jwt", None, "malformed"),
    (jwt.sign(claims(iss=LEGACY_ISSUER), KEY, "k1"), "legacy", "legacy"),
    (jwt.sign({k: v for k, v in claims().items() if k != "exp"}, KEY, "k1"), "legacy", "legacy"),
])
def test_tokenreview_refuses_junk_and_legacy_tokens_without_an_api_call(
        kube: FakeKubePort, pool: ThreadPoolExecutor, clock: Clock, token: str,
        words: str | None, reason: str) -> None:
    kube.reviews[token] = reviewed("shop", "web")  # the API server would even say yes
    error = refusal(review(kube, pool, clock).validate(token), words)
    assert error.reason == reason and kube.calls["tokenreview"] == 0


@pytest.mark.parametrize(("verdict", "words", "reason"), [
    (None, "did not authenticate", "tokenreview"),
    (TokenReviewResult(True, "system:serviceaccount:shop:web", ("system:serviceaccounts",),
                       error="boom"), "did not authenticate", "tokenreview"),
    (TokenReviewResult(True, "alice", ("system:authenticated",)),
     "does not belong to a service account", "subject"),
    (reviewed("shop", "web", audiences=("vault",)), "audience", "audience"),
])
def test_tokenreview_verdicts_that_refuse(
        kube: FakeKubePort, pool: ThreadPoolExecutor, clock: Clock, verdict: Any, words: str,
        reason: str) -> None:
    token = mint()
    if verdict is not None:
        kube.reviews[token] = verdict
    error = refusal(review(kube, pool, clock).validate(token), words)
    assert (error.reason, error.cacheable, kube.calls["tokenreview"]) == (reason, True, 1)


def test_tokenreview_with_the_api_server_away_refuses_uncacheably(
        kube: FakeKubePort, pool: ThreadPoolExecutor, clock: Clock) -> None:
    token = mint()
    kube.reviews[token] = reviewed("shop", "web")
    kube.fail("tokenreview", 503)
    error = refusal(review(kube, pool, clock).validate(token), "cannot confirm the token")
    assert (error.reason, error.cacheable) == ("api_unavailable", False)
    kube.clear_faults()
    assert run(review(kube, pool, clock).validate(token)).name == "web"


def test_both_checks_locally_first_then_asks_and_both_must_agree(
        kube: FakeKubePort, pool: ThreadPoolExecutor, clock: Clock) -> None:
    source = FakeKeySource(ISSUER, {"k1": KEY.public_key()})
    both = BothValidator(jwks(clock, source), review(kube, pool, clock))
    pod = kube.add_pod("shop", "web-0", service_account="web")
    token = mint(pod=("web-0", "p-from-claims"))
    kube.reviews[token] = reviewed("shop", "web", pod=pod, node="n1")
    account = run(both.validate(token))
    assert (account.pod_name, account.pod_uid, account.node_name) == ("web-0", pod.uid, "n1")
    assert account.expires_at == T0 + 3600 and kube.calls["tokenreview"] == 1

    forged = jwt.sign(claims(), OTHER_KEY, "k1")
    kube.reviews[forged] = reviewed("shop", "web")
    refusal(both.validate(forged), "does not verify")
    assert kube.calls["tokenreview"] == 1  # a forgery never reaches the API server

    lying = mint("shop", "db")
    kube.reviews[lying] = reviewed("shop", "web")
    assert refusal(both.validate(lying), "disagree").reason == "subject"

    deleted = mint()  # locally fine; the API server no longer knows it (account deleted)
    assert refusal(both.validate(deleted), "did not authenticate").reason == "tokenreview"


# ---- CachingAuthenticator -------------------------------------------------------------------

class Validator:
    """Scripted validations; `gate`, when set, holds every validation until it is set."""

    def __init__(self) -> None:
        self.outcomes: dict[str, ServiceAccount | AuthenticationError] = {}
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None

    async def validate(self, token: str) -> ServiceAccount:
        self.calls.append(token)
        if self.gate is not None:
            await self.gate.wait()
        outcome = self.outcomes.get(token)
        if outcome is None:
            raise AuthenticationError("token signature does not verify", reason="signature")
        if isinstance(outcome, AuthenticationError):
            raise outcome
        return outcome


WEB = ServiceAccount("shop", "web", expires_at=T0 + 3600)


def cache(clock: Clock, validator: Validator, metrics: FakeAuthMetrics | None = None,
          **settings: Any) -> CachingAuthenticator:
    return CachingAuthenticator(validator.validate, CacheSettings(**settings), clock.epoch,
                                metrics or FakeAuthMetrics())


def test_a_validated_token_is_served_from_memory_until_the_ttl(clock: Clock) -> None:
    validator, metrics = Validator(), FakeAuthMetrics()
    validator.outcomes["t"] = WEB
    tokens = cache(clock, validator, metrics, ttl_seconds=300)
    assert [run(tokens.authenticate("t")) for _ in range(3)] == [WEB] * 3
    assert validator.calls == ["t"] and metrics.cache == {"miss": 1, "hit": 2}
    clock.advance(timedelta(seconds=299))
    run(tokens.authenticate("t"))
    assert validator.calls == ["t"]
    clock.advance(timedelta(seconds=1))
    run(tokens.authenticate("t"))
    assert validator.calls == ["t", "t"] and metrics.cache["miss"] == 2


def test_a_token_is_never_served_from_memory_past_its_exp(clock: Clock) -> None:
    validator = Validator()
    validator.outcomes["t"] = ServiceAccount("shop", "web", expires_at=T0 + 60)
    tokens = cache(clock, validator, ttl_seconds=300)
    run(tokens.authenticate("t"))
    clock.advance(timedelta(seconds=59))
    run(tokens.authenticate("t"))
    assert len(validator.calls) == 1
    clock.advance(timedelta(seconds=1))
    validator.outcomes["t"] = AuthenticationError("token has expired", reason="expired")
    assert refusal(tokens.authenticate("t"), "expired").reason == "expired"
    assert len(validator.calls) == 2


def test_a_refusal_is_remembered_for_the_negative_ttl_only(clock: Clock) -> None:
    validator, metrics = Validator(), FakeAuthMetrics()
    validator.outcomes["bad"] = AuthenticationError("token audience is wrong", reason="audience")
    tokens = cache(clock, validator, metrics, negative_ttl_seconds=5)
    for _ in range(20):
        error = refusal(tokens.authenticate("bad"), "token audience is wrong")
        assert error.reason == "audience"
    assert validator.calls == ["bad"] and metrics.cache == {"miss": 1, "negative_hit": 19}
    clock.advance(timedelta(seconds=4.9))
    refusal(tokens.authenticate("bad"))
    assert len(validator.calls) == 1
    clock.advance(timedelta(seconds=0.1))
    validator.outcomes["bad"] = WEB  # e.g. the audience was fixed meanwhile
    assert run(tokens.authenticate("bad")) == WEB
    assert len(validator.calls) == 2 and len(tokens) == 1


def test_a_refusal_that_says_nothing_of_the_token_is_not_remembered(clock: Clock) -> None:
    validator, metrics = Validator(), FakeAuthMetrics()
    validator.outcomes["t"] = AuthenticationError("API server away", reason="api_unavailable",
                                                  cacheable=False)
    tokens = cache(clock, validator, metrics)
    for _ in range(3):
        assert refusal(tokens.authenticate("t")).reason == "api_unavailable"
    assert len(validator.calls) == 3 and metrics.cache == {"miss": 3}
    validator.outcomes["t"] = WEB
    assert run(tokens.authenticate("t")) == WEB


def test_concurrent_validations_of_one_token_coalesce(clock: Clock) -> None:
    validator, metrics = Validator(), FakeAuthMetrics()
    validator.outcomes.update({"t": WEB, "bad": AuthenticationError("no", reason="issuer")})
    tokens = cache(clock, validator, metrics)

    async def many() -> list[Any]:
        validator.gate = asyncio.Event()
        waiting = [asyncio.ensure_future(tokens.authenticate(t)) for t in ["t"] * 30 + ["bad"] * 20]
        await asyncio.sleep(0)  # every caller is now waiting on one of two checks
        validator.gate.set()
        return await asyncio.gather(*waiting, return_exceptions=True)

    outcomes = run(many())
    assert outcomes[:30] == [WEB] * 30
    assert all(isinstance(o, AuthenticationError) and o.reason == "issuer" for o in outcomes[30:])
    assert sorted(validator.calls) == ["bad", "t"]
    assert metrics.cache == {"miss": 2, "coalesced": 48}


def test_a_caller_giving_up_does_not_cancel_the_check_the_others_wait_on(clock: Clock) -> None:
    validator = Validator()
    validator.outcomes["t"] = WEB
    tokens = cache(clock, validator)

    async def scenario() -> list[ServiceAccount]:
        validator.gate = asyncio.Event()
        leader = asyncio.ensure_future(tokens.authenticate("t"))
        await asyncio.sleep(0)
        followers = [asyncio.ensure_future(tokens.authenticate("t")) for _ in range(5)]
        await asyncio.sleep(0)
        leader.cancel()  # its deadline passed
        await asyncio.sleep(0)
        validator.gate.set()
        assert leader.cancelled()
        return await asyncio.gather(*followers)

    assert run(scenario()) == [WEB] * 5
    assert validator.calls == ["t"] and len(tokens) == 1


def test_the_cache_is_bounded_least_recently_used_first(clock: Clock) -> None:
    validator = Validator()
    validator.outcomes.update({t: WEB for t in "abc"})
    tokens = cache(clock, validator, max_entries=2)
    for token in "abac":  # "a" used again after "b": "b" is the least recently used
        run(tokens.authenticate(token))
    assert len(tokens) == 2
    run(tokens.authenticate("a"))
    run(tokens.authenticate("b"))
    assert validator.calls == ["a", "b", "c", "b"]


def test_a_coalesced_tokenreview_is_one_api_call(
        kube: FakeKubePort, pool: ThreadPoolExecutor, clock: Clock) -> None:
    token = mint()
    kube.reviews[token] = reviewed("shop", "web")
    tokens = CachingAuthenticator(review(kube, pool, clock).validate, CacheSettings(),
                                  clock.epoch, FakeAuthMetrics())

    async def fifty() -> list[ServiceAccount]:
        kube.hold("tokenreview")
        waiting = [asyncio.ensure_future(tokens.authenticate(token)) for _ in range(50)]
        await asyncio.sleep(0)
        kube.release("tokenreview")
        return await asyncio.gather(*waiting)

    assert {a.name for a in run(fifty())} == {"web"}
    assert kube.calls["tokenreview"] == 1


# ---- WorkloadAuthenticator --------------------------------------------------------------------

class Workloads:
    """Two clusters, each with scripted tokens and a fake API server."""

    def __init__(self, clock: Clock, pool: ThreadPoolExecutor, *, pods: bool = False,
                 trusted: frozenset[str] = frozenset({"kube-system/ztunnel"}),
                 east_api: bool = True) -> None:
        self.east, self.west = FakeKubePort("east"), FakeKubePort("west")
        self.validators = {"east": Validator(), "west": Validator()}
        self.clusters = {
            name: ClusterAuth(name, cache(clock, self.validators[name]),
                              calls_for(kube, pool, clock) if name == "west" or east_api
                              else None)
            for name, kube in (("east", self.east), ("west", self.west))}
        self.auth = WorkloadAuthenticator(self.clusters, "east", verify_pod_binding=pods,
                                          trusted_node_accounts=trusted,
                                          monotonic=clock.monotonic)

    def token(self, name: str, account: ServiceAccount, cluster: str = "east") -> str:
        self.validators[cluster].outcomes[name] = account
        return name

    def authenticate(self, token: str, cluster: str | None = None) -> ServiceAccount:
        return run(self.auth.authenticate(token, cluster))

    def impersonate(self, caller: ServiceAccount, namespace: str, name: str,
                    cluster: str | None = None) -> ServiceAccount:
        return run(self.auth.impersonate(caller, cluster, namespace, name))


def test_the_clusterid_picks_whose_tokens_count(clock: Clock, pool: ThreadPoolExecutor) -> None:
    w = Workloads(clock, pool)
    east = w.token("east-web", ServiceAccount("shop", "web", pod_name="e"))
    west = w.token("west-web", ServiceAccount("shop", "web", pod_name="w"), "west")
    assert w.authenticate(east).pod_name == "e"
    assert w.authenticate(east, "east").pod_name == "e"
    assert w.authenticate(west, "west").pod_name == "w"
    refusal(w.auth.authenticate(west, None), "does not verify")  # east's issuer did not sign it
    error = refusal(w.auth.authenticate(east, "nowhere"), "unknown cluster id")
    assert error.reason == "cluster"
    assert w.validators["west"].calls == ["west-web"]


def test_a_pod_bound_token_is_accepted_only_while_its_pod_lives(
        clock: Clock, pool: ThreadPoolExecutor) -> None:
    w = Workloads(clock, pool, pods=True)
    pod = w.east.add_pod("shop", "web-0", service_account="web")
    token = w.token("t", ServiceAccount("shop", "web", pod_name="web-0", pod_uid=pod.uid))
    assert w.authenticate(token).pod_uid == pod.uid
    w.east.delete_pod("shop", "web-0")
    clock.advance(timedelta(seconds=POD_CACHE_SECONDS - 0.1))
    assert w.authenticate(token).pod_uid == pod.uid  # the look-up is remembered a while
    assert w.east.calls["pod"] == 1
    clock.advance(timedelta(seconds=0.1))
    error = refusal(w.auth.authenticate(token, None), "bound to a pod that no longer exists")
    assert error.reason == "pod_binding" and w.east.calls["pod"] == 2

    w.east.add_pod("shop", "web-0", service_account="web", uid="a-new-uid")  # same name
    clock.advance(timedelta(seconds=POD_CACHE_SECONDS))
    refusal(w.auth.authenticate(token, None), "no longer exists")  # the old uid stays dead
    fresh = w.token("t2", ServiceAccount("shop", "web", pod_name="web-0", pod_uid="a-new-uid"))
    assert w.authenticate(fresh).pod_uid == "a-new-uid"
    assert w.east.calls["pod"] == 3  # the second token used the remembered look-up


def test_pod_binding_looks_nothing_up_when_off_or_unbound(
        clock: Clock, pool: ThreadPoolExecutor) -> None:
    off = Workloads(clock, pool, pods=False)
    off.authenticate(off.token("t", ServiceAccount("shop", "web", pod_name="gone", pod_uid="x")))
    on = Workloads(clock, pool, pods=True)
    on.authenticate(on.token("t", ServiceAccount("shop", "web")))  # no pod in the token
    assert off.east.calls["pod"] == on.east.calls["pod"] == 0


def test_pod_binding_without_an_answer_from_the_api_refuses_uncacheably(
        clock: Clock, pool: ThreadPoolExecutor) -> None:
    w = Workloads(clock, pool, pods=True)
    w.east.add_pod("shop", "web-0", service_account="web")
    token = w.token("t", ServiceAccount("shop", "web", pod_name="web-0"))
    w.east.fail("pod", 500)
    error = refusal(w.auth.authenticate(token, None), "cannot look up the token's pod")
    assert (error.reason, error.cacheable) == ("api_unavailable", False)
    w.east.clear_faults()
    assert w.authenticate(token).pod_name == "web-0"  # nothing bad was remembered

    no_api = Workloads(clock, pool, pods=True, east_api=False)
    token = no_api.token("t", ServiceAccount("shop", "web", pod_name="web-0"))
    error = refusal(no_api.auth.authenticate(token, None), "no API server configured")
    assert (error.reason, error.cacheable) == ("pod_binding", False)


AGENT = ServiceAccount("kube-system", "ztunnel", node_name="n1")


def test_a_trusted_node_agent_may_act_for_a_workload_with_a_pod_on_its_node(
        clock: Clock, pool: ThreadPoolExecutor) -> None:
    w = Workloads(clock, pool)
    w.east.add_pod("shop", "web-0", service_account="web", node="n1")
    w.east.add_pod("shop", "db-0", service_account="db", node="n2")
    assert w.impersonate(AGENT, "shop", "web") == ServiceAccount("shop", "web", node_name="n1")
    error = refusal(w.auth.impersonate(AGENT, None, "shop", "db"), "no pod of that identity")
    assert error.reason == "impersonation" and w.east.calls["pods"] == 2
    # In the west cluster, its own pods count.
    w.west.add_pod("shop", "db-w", service_account="db", node="n1")
    assert w.impersonate(AGENT, "shop", "db", "west").name == "db"
    assert w.west.calls["pods"] == 1


def test_impersonation_is_refused_to_anyone_not_trusted(
        clock: Clock, pool: ThreadPoolExecutor) -> None:
    w = Workloads(clock, pool)
    w.east.add_pod("shop", "web-0", service_account="web", node="n1")
    for caller in (ServiceAccount("shop", "web", node_name="n1"),
                   ServiceAccount("kube-system", "other", node_name="n1")):
        error = refusal(w.auth.impersonate(caller, None, "shop", "web"), "may not use")
        assert error.reason == "impersonation"
    assert w.east.calls["pods"] == 0


def test_a_node_agent_unbound_to_a_node_is_not_checked_against_pods(
        clock: Clock, pool: ThreadPoolExecutor) -> None:
    w = Workloads(clock, pool)
    unbound = ServiceAccount("kube-system", "ztunnel")
    assert w.impersonate(unbound, "shop", "anything") == ServiceAccount("shop", "anything")
    assert w.east.calls["pods"] == 0


def test_impersonation_without_an_answer_about_the_node_is_refused(
        clock: Clock, pool: ThreadPoolExecutor) -> None:
    w = Workloads(clock, pool)
    w.east.fail("pods", 503)
    error = refusal(w.auth.impersonate(AGENT, None, "shop", "web"), "cannot list pods")
    assert (error.reason, error.cacheable) == ("api_unavailable", False)
    no_api = Workloads(clock, pool, east_api=False)
    refusal(no_api.auth.impersonate(AGENT, None, "shop", "web"), "no API server")
    refusal(w.auth.impersonate(AGENT, "nowhere", "shop", "web"), "unknown cluster id")


# ---- AdminAuthenticator ---------------------------------------------------------------------

class Admin:
    def __init__(self) -> None:
        self.tokens = FakeAdminTokens()
        entry = AuditEntry(at=NOW, actor="bootstrap", action="token.create", target="ops",
                           outcome="ok")
        self.tokens.create("ops", Role.OPERATOR, "mca_ops-secret", entry)
        self.tokens.create("root", Role.ADMIN, "mca_root-secret", entry)
        self.sa_tokens = FakeTokenAuthenticator({
            "jwt-deployer": ServiceAccount("ci", "deployer"),
            "jwt-stranger": ServiceAccount("ci", "stranger"),
            "jwt-expired": AuthenticationError("token has expired", reason="expired")})
        self.unusable: set[str] = set()
        sa_tokens: TokenAuthenticator = self.sa_tokens
        self.auth = AdminAuthenticator(
            tokens=self.tokens, service_account_tokens=sa_tokens,
            service_accounts={"ci/deployer": Role.OPERATOR},
            spiffe_ids={"spiffe://cluster.local/ns/ops/sa/console": Role.VIEWER},
            certificate_usable=lambda serial: serial not in self.unusable)

    def principal(self, authorization: str | None, certificate: bytes | None = None
                  ) -> Principal:
        return run(self.auth.authenticate(authorization, certificate))


def client_certificate(spiffe_id: str | None) -> tuple[bytes, str]:
    authority = make_authority()
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)] if spiffe_id \
        else [x509.DNSName("console.ops")]
    builder = (x509.CertificateBuilder().subject_name(x509.Name([]))
               .issuer_name(authority.certificate.subject)
               .public_key(ec_key("secp256r1", 42).public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW - timedelta(minutes=1))
               .not_valid_after(NOW + timedelta(hours=1))
               .add_extension(x509.SubjectAlternativeName(names), critical=True))
    if spiffe_id:
        builder = templates.leaf_svid(
            public_key=ec_key("secp256r1", 42).public_key(),
            spiffe_id=SpiffeId.parse(spiffe_id), issuer=authority.certificate,
            serial=x509.random_serial_number(), not_before=NOW - timedelta(minutes=1),
            not_after=NOW + timedelta(hours=1))
    cert = authority.sign(builder)
    return cert.public_bytes(Encoding.DER), f"{cert.serial_number:x}"


def test_an_admin_token_names_its_holder_and_role() -> None:
    admin = Admin()
    assert admin.principal("Bearer mca_ops-secret") == Principal("token:ops", Role.OPERATOR)
    assert admin.principal("bearer mca_root-secret") == Principal("token:root", Role.ADMIN)
    admin.tokens.revoke("ops", AuditEntry(at=NOW, actor="token:root", action="token.revoke",
                                          target="ops", outcome="ok"))
    for token in ("mca_ops-secret", "mca_never-issued"):
        with pytest.raises(AuthenticationError, match="unknown or revoked"):
            admin.principal(f"Bearer {token}")
    assert admin.sa_tokens.calls == []  # an mca_ token is never taken for a JWT


def test_a_service_account_token_maps_to_its_configured_role() -> None:
    admin = Admin()
    assert admin.principal("Bearer jwt-deployer") == Principal("sa:ci/deployer", Role.OPERATOR)
    with pytest.raises(PermissionDenied, match="ci/stranger has no admin role"):
        admin.principal("Bearer jwt-stranger")
    with pytest.raises(AuthenticationError, match="expired"):
        admin.principal("Bearer jwt-expired")
    with pytest.raises(AuthenticationError, match="not a JWT"):
        admin.principal("Bearer jwt-unknown")


@pytest.mark.parametrize(("header", "words"), [
    ("Basic dXNlcjpwYXNz", "Authorization must start with 'Bearer '"),
    ("Bearer ", "empty bearer token"),
    ("mca_ops-secret", "must start with 'Bearer '"),
])
def test_a_malformed_authorization_header_is_refused(header: str, words: str) -> None:
    with pytest.raises(AuthenticationError, match=words):
        Admin().principal(header)


def test_no_credentials_at_all_are_refused() -> None:
    with pytest.raises(AuthenticationError, match="credentials are required"):
        Admin().principal(None)


def test_a_client_certificate_maps_its_spiffe_id_while_it_is_usable() -> None:
    admin = Admin()
    console = "spiffe://cluster.local/ns/ops/sa/console"
    der, serial = client_certificate(console)
    assert admin.principal(None, der) == Principal(console, Role.VIEWER)
    admin.unusable.add(serial)
    with pytest.raises(AuthenticationError, match="revoked or not on record"):
        admin.principal(None, der)
    stranger, _ = client_certificate("spiffe://cluster.local/ns/ops/sa/intern")
    with pytest.raises(PermissionDenied, match="has no admin role"):
        admin.principal(None, stranger)
    no_id, _ = client_certificate(None)
    with pytest.raises(AuthenticationError, match="no single SPIFFE ID"):
        admin.principal(None, no_id)


def test_an_authorization_header_wins_over_a_client_certificate() -> None:
    admin = Admin()
    der, _ = client_certificate("spiffe://cluster.local/ns/ops/sa/console")
    assert admin.principal("Bearer mca_root-secret", der) == Principal("token:root", Role.ADMIN)
    with pytest.raises(AuthenticationError):
        admin.principal("Bearer mca_wrong", der)  # a bad header is not rescued by the cert
