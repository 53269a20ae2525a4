"""`--watch-kube-policies` against the in-test Kubernetes API server.

The real stack: watch_kube_policies -> AuthorizationPolicies (the official `kubernetes` client,
list and Watch) -> HTTPS -> FakeKubeApi, and decisions through the PolicyStore it feeds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meshca.authz import parse_request
from meshca.infra.kube.api import KubeApi
from meshca.infra.kube.policies import AuthorizationPolicies
from meshca.service.kube_policies import Backoff, watch_kube_policies
from meshca.service.policy_store import PolicyStore
from tests.fakes.kube_api import FakeKubeApi

ALLOW_GET = {"selector": {"matchLabels": {"app": "cart"}},
             "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}
ALLOW_GET_POST = {"selector": {"matchLabels": {"app": "cart"}},
                  "rules": [{"to": [{"operation": {"methods": ["GET", "POST"]}}]}]}
DENY_ADMIN = {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]}]}
BAD_IP = {"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/33"]}}]}]}
BAD_FIELD = "spec.rules[0].from[0].source.ipBlocks[0]"
WITHIN = 1.0  # seconds for a change in the cluster to reach decisions
FAST = Backoff(initial=0.05, maximum=0.2)


@pytest.fixture
def kube() -> Iterator[FakeKubeApi]:
    with FakeKubeApi() as fake:
        fake.add_namespace("shop")
        fake.add_namespace("bank")
        yield fake


@pytest.fixture
def objects(kube: FakeKubeApi, tmp_path: Path) -> AuthorizationPolicies:
    api = KubeApi.connect("test", str(kube.kubeconfig(tmp_path / "kubeconfig")))
    return AuthorizationPolicies.of(api)


@dataclass
class Running:
    store: PolicyStore
    stopping: asyncio.Event
    task: asyncio.Task[None]

    def keys(self) -> list[str]:
        return sorted(p.key for p in self.store.current.policies)

    async def until(self, condition: Callable[[], bool], within: float = WITHIN) -> float:
        """Seconds it took for `condition` to hold; fails after `within`."""
        started = time.monotonic()
        while not condition():
            assert not self.task.done(), "the watch loop ended"
            assert time.monotonic() - started < within, f"not within {within}s; store holds {self.keys()}"
            await asyncio.sleep(0.01)
        return time.monotonic() - started

    async def holds(self, *keys: str, within: float = WITHIN) -> float:
        return await self.until(lambda: self.keys() == sorted(keys), within)


@asynccontextmanager
async def watching(objects: AuthorizationPolicies, **options: Any) -> AsyncIterator[Running]:
    store, stopping = PolicyStore(), asyncio.Event()
    options.setdefault("backoff", FAST)
    task = asyncio.create_task(watch_kube_policies(store, objects, stopping, **options))
    try:
        yield Running(store, stopping, task)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 5)


def decide(store: PolicyStore, method: str, path: str = "/items", app: str = "cart") -> str:
    request, _ = parse_request({
        "protocol": "HTTP",
        "source": {"principal": "spiffe://cluster.local/ns/web/sa/front", "ip": "10.1.2.3"},
        "destination": {"namespace": "shop", "labels": {"app": app}, "port": 8080},
        "http": {"method": method, "path": path, "host": "cart.shop", "headers": {}},
    })
    return store.check(request).decision


def test_listed_then_every_change_reaches_decisions_within_a_second(
    kube: FakeKubeApi, objects: AuthorizationPolicies
) -> None:
    kube.put_authorization_policy("shop", "cart-get", ALLOW_GET)

    async def scenario() -> None:
        async with watching(objects) as run:
            await run.holds("shop/cart-get")
            assert decide(run.store, "GET") == "ALLOW"
            assert decide(run.store, "POST") == "DENY"  # an ALLOW policy applies, no rule matches
            assert decide(run.store, "POST", app="other") == "ALLOW"  # the selector leaves it out

            kube.put_authorization_policy("shop", "deny-admin", DENY_ADMIN)
            await run.holds("shop/cart-get", "shop/deny-admin")
            decision = run.store.check(parse_request({
                "protocol": "HTTP", "source": {"principal": None, "ip": "10.1.2.3"},
                "destination": {"namespace": "shop", "labels": {"app": "cart"}, "port": 8080},
                "http": {"method": "GET", "path": "/admin/keys", "host": "cart", "headers": {}},
            })[0])
            assert (decision.decision, decision.policy) == ("DENY", "shop/deny-admin")

            kube.put_authorization_policy("shop", "cart-get", ALLOW_GET_POST)
            await run.until(lambda: decide(run.store, "POST") == "ALLOW")

            kube.delete_authorization_policy("shop", "deny-admin")
            await run.holds("shop/cart-get")
            assert decide(run.store, "GET", path="/admin/keys") == "ALLOW"

            kube.delete_authorization_policy("shop", "cart-get")
            await run.holds()
            assert decide(run.store, "DELETE") == "ALLOW"  # nothing applies any more
        assert kube.calls[("GET", "authorizationpolicies")] == 1  # one list, then only the watch

    asyncio.run(scenario())


def test_a_burst_of_changes_is_published_together(kube: FakeKubeApi, objects: AuthorizationPolicies) -> None:
    async def scenario() -> None:
        async with watching(objects, debounce=0.2) as run:
            await run.holds()
            listed_version = run.store.current.version
            with kube.atomic():
                for index in range(20):
                    kube.put_authorization_policy("bank", f"p{index:02d}", DENY_ADMIN)
            await run.until(lambda: len(run.keys()) == 20)
            assert run.store.current.version == listed_version + 1  # one swap for the burst

    asyncio.run(scenario())


def test_an_invalid_object_is_skipped_with_its_field_and_the_others_apply(
    kube: FakeKubeApi, objects: AuthorizationPolicies, caplog: pytest.LogCaptureFixture
) -> None:
    kube.put_authorization_policy("shop", "cart-get", ALLOW_GET)
    kube.put_authorization_policy("shop", "broken", BAD_IP)
    caplog.set_level(logging.WARNING, logger="meshca.service.kube_policies")

    async def scenario() -> None:
        async with watching(objects) as run:
            await run.holds("shop/cart-get")
            assert decide(run.store, "GET") == "ALLOW"
            kube.put_authorization_policy("bank", "no-rules", {"action": "DENY"})  # arrives by watch
            kube.put_authorization_policy("bank", "fine", DENY_ADMIN)
            await run.holds("bank/fine", "shop/cart-get")
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert any("shop/broken" in w and BAD_FIELD in w for w in warnings), warnings
            assert any("bank/no-rules" in w and "spec.rules" in w for w in warnings), warnings

            kube.put_authorization_policy("shop", "broken", DENY_ADMIN)  # fixed: now enforced
            await run.holds("bank/fine", "shop/broken", "shop/cart-get")
            # An invalid edit keeps the last valid version: a mistyped DENY goes on denying.
            kube.put_authorization_policy("shop", "broken", BAD_IP)
            kube.put_authorization_policy("shop", "later", ALLOW_GET)
            await run.holds("bank/fine", "shop/broken", "shop/cart-get", "shop/later")
            assert decide(run.store, "GET", path="/admin/keys") == "DENY"
            assert any("shop/broken" in r.getMessage() and "last valid version" in r.getMessage()
                       for r in caplog.records)
            kube.delete_authorization_policy("shop", "broken")  # deleting it: gone at last
            await run.holds("bank/fine", "shop/cart-get", "shop/later")

    asyncio.run(scenario())


def test_410_expired_lists_again_without_losing_or_duplicating(
    kube: FakeKubeApi, objects: AuthorizationPolicies
) -> None:
    kube.put_authorization_policy("shop", "stays", ALLOW_GET)
    kube.put_authorization_policy("shop", "goes", DENY_ADMIN)

    async def scenario() -> None:
        async with watching(objects) as run:
            await run.holds("shop/goes", "shop/stays")
            await asyncio.sleep(0.1)  # the watch is open
            # Changes the watch never delivers: only a new list can tell them.
            with kube.atomic():
                kube.put_authorization_policy("bank", "new", DENY_ADMIN)
                kube.delete_authorization_policy("shop", "goes")
                kube.put_authorization_policy("shop", "stays", ALLOW_GET_POST)
                kube.expire_watch_history()
            await run.holds("bank/new", "shop/stays")
            assert decide(run.store, "POST") == "ALLOW"
            assert len(run.store.current.policies) == 2
            assert kube.expired_watches == 1
            assert kube.calls[("GET", "authorizationpolicies")] == 2  # the first list, then one more
            kube.put_authorization_policy("bank", "after", DENY_ADMIN)  # and watching goes on
            await run.holds("bank/after", "bank/new", "shop/stays")

    asyncio.run(scenario())


def test_the_api_server_going_down_and_back_is_retried(
    kube: FakeKubeApi, objects: AuthorizationPolicies, caplog: pytest.LogCaptureFixture
) -> None:
    kube.put_authorization_policy("shop", "cart-get", ALLOW_GET)
    caplog.set_level(logging.INFO, logger="meshca.service.kube_policies")

    async def scenario() -> None:
        async with watching(objects) as run:
            await run.holds("shop/cart-get")
            kube.go_down()
            await asyncio.sleep(1.0)  # several failed attempts
            assert run.keys() == ["shop/cart-get"]  # the last known set stays enforced
            assert decide(run.store, "POST") == "DENY"
            kube.put_authorization_policy("shop", "cart-get", ALLOW_GET_POST)  # while it was down
            kube.put_authorization_policy("bank", "new", DENY_ADMIN)
            kube.come_up()
            await run.holds("bank/new", "shop/cart-get", within=2.0)
            assert decide(run.store, "POST") == "ALLOW"
        failures = [r for r in caplog.records if "watch failed" in r.getMessage()]
        assert 1 <= len(failures) <= 2, [r.getMessage() for r in failures]  # distinct errors only
        assert not any(r.exc_info for r in failures)  # expected failures: no traceback
        assert any("working again" in r.getMessage() for r in caplog.records)

    asyncio.run(scenario())


def test_a_refusal_backs_off_and_honours_retry_after(
    kube: FakeKubeApi, objects: AuthorizationPolicies
) -> None:
    kube.put_authorization_policy("shop", "cart-get", ALLOW_GET)
    kube.fail("/apis/security.istio.io/v1/authorizationpolicies", 503, times=2, retry_after=1)

    async def scenario() -> None:
        async with watching(objects, backoff=Backoff(initial=0.05, maximum=0.4)) as run:
            took = await run.holds("shop/cart-get", within=3.0)
            assert took >= 0.7  # two waits of Retry-After (1 s), capped at the maximum (0.4 s)
        assert kube.calls[("GET", "authorizationpolicies")] == 3

    asyncio.run(scenario())


def test_stopping_ends_the_loop_promptly(kube: FakeKubeApi, objects: AuthorizationPolicies) -> None:
    async def scenario() -> None:
        store, stopping = PolicyStore(), asyncio.Event()
        task = asyncio.create_task(watch_kube_policies(store, objects, stopping, watch_timeout=300))
        while kube.calls[("WATCH", "authorizationpolicies")] == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # blocked reading an open watch
        started = time.monotonic()
        stopping.set()
        await asyncio.wait_for(task, 2)
        assert time.monotonic() - started < 0.5

        kube.go_down()  # and while waiting to retry
        stopping = asyncio.Event()
        task = asyncio.create_task(watch_kube_policies(store, objects, stopping,
                                                       backoff=Backoff(initial=30, maximum=30)))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        stopping.set()
        await asyncio.wait_for(task, 2)
        assert time.monotonic() - started < 0.5

    started = time.monotonic()
    asyncio.run(scenario())  # returns only once the watch's thread has ended too
    assert time.monotonic() - started < 3
