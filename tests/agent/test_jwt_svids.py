"""The agent's JWT-SVID cache (meshca/agent/jwt_svids.py) over an in-memory minter, and the SVID
cache's JWT bundles and federated roots (meshca/agent/svid_cache.py) over an in-memory bundle
source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from meshca.agent.jwt_svids import JwtSvidCache, check_audience
from meshca.agent.metrics import AgentMetrics
from meshca.agent.ports import Identity, JwtBundleSet, JwtSvid, TrustBundle
from meshca.agent.svid_cache import SvidCache
from meshca.core.spiffe import SpiffeId
from meshca.errors import PermissionDenied, Unavailable
from tests.fakes.agent_server import FakeBundleSource, FakeSigner, fake_authority
from tests.unit.pki import TRUST_DOMAIN, ec_key

WEB = Identity(SpiffeId.for_service_account(TRUST_DOMAIN, "default", "web"))
API = Identity(SpiffeId.for_service_account(TRUST_DOMAIN, "default", "api"))
STEP = 15.0


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class FakeMinter:
    def __init__(self, clock: Clock, ttl: timedelta = timedelta(minutes=5)) -> None:
        self.clock = clock
        self.ttl = ttl
        self.calls: list[tuple[SpiffeId, tuple[str, ...]]] = []
        self.fail_with: Exception | None = None
        self.gate: asyncio.Event | None = None

    async def mint(self, spiffe_id: SpiffeId, audience: tuple[str, ...],
                   ttl: timedelta | None = None) -> JwtSvid:
        self.calls.append((spiffe_id, audience))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return JwtSvid(f"token-{len(self.calls)}", spiffe_id, self.clock.now + self.ttl,
                       {"aud": list(audience)})


class NoBundles:
    def jwt_bundles(self) -> JwtBundleSet:
        return JwtBundleSet()

    async def watch_jwt_bundles(self) -> AsyncIterator[JwtBundleSet]:
        yield JwtBundleSet()


def cache(clock: Clock, minter: FakeMinter, **kwargs: Any) -> JwtSvidCache:
    return JwtSvidCache(minter, NoBundles(), trust_domain=TRUST_DOMAIN, now=clock, **kwargs)


def test_served_from_the_cache_until_half_its_life() -> None:
    async def scenario() -> None:
        clock = Clock()
        minter = FakeMinter(clock)
        metrics = AgentMetrics()
        jwts = cache(clock, minter, metrics=metrics)
        first = await jwts.fetch(WEB, ("db",))
        clock.now += timedelta(minutes=2, seconds=29)
        assert await jwts.fetch(WEB, ("db",)) is first
        clock.now += timedelta(seconds=2)  # past 2:30 of 5:00
        renewed = await jwts.fetch(WEB, ("db",))
        assert renewed.token != first.token and len(minter.calls) == 2
        assert metrics.registry.get_sample_value(
            "meshca_agent_jwt_svid_mints_total", {"outcome": "ok"}) == 2

    run(scenario)


def test_keyed_by_identity_and_audience_set() -> None:
    async def scenario() -> None:
        clock = Clock()
        minter = FakeMinter(clock)
        jwts = cache(clock, minter)
        a = await jwts.fetch(WEB, ("db", "cache"))
        assert await jwts.fetch(WEB, ("cache", "db", "db")) is a  # a set: order, repeats
        b = await jwts.fetch(WEB, ("db",))
        c = await jwts.fetch(API, ("db",))
        assert len({a.token, b.token, c.token}) == 3
        assert minter.calls == [(WEB.spiffe_id, ("db", "cache")), (WEB.spiffe_id, ("db",)),
                                (API.spiffe_id, ("db",))]

    run(scenario)


def test_concurrent_requests_share_one_mint_and_a_cancelled_caller_does_not_cancel_it() -> None:
    async def scenario() -> None:
        clock = Clock()
        minter = FakeMinter(clock)
        minter.gate = asyncio.Event()
        jwts = cache(clock, minter)
        quitter = asyncio.create_task(jwts.fetch(WEB, ("db",)))
        waiters = [asyncio.create_task(jwts.fetch(WEB, ("db",))) for _ in range(5)]
        await asyncio.sleep(0.05)
        quitter.cancel()
        minter.gate.set()
        tokens = {svid.token for svid in await asyncio.gather(*waiters)}
        assert tokens == {"token-1"} and len(minter.calls) == 1

    run(scenario)


def test_bounded_least_recently_used_first() -> None:
    async def scenario() -> None:
        clock = Clock()
        minter = FakeMinter(clock)
        jwts = cache(clock, minter, max_entries=2)
        await jwts.fetch(WEB, ("a",))
        await jwts.fetch(WEB, ("b",))
        await jwts.fetch(WEB, ("a",))  # a is now the most recent
        await jwts.fetch(WEB, ("c",))  # b goes
        assert len(jwts) == 2 and len(minter.calls) == 3
        await jwts.fetch(WEB, ("a",))
        assert len(minter.calls) == 3
        await jwts.fetch(WEB, ("b",))
        assert len(minter.calls) == 4

    run(scenario)


def test_failures_reach_the_caller_and_are_not_cached() -> None:
    async def scenario() -> None:
        clock = Clock()
        minter = FakeMinter(clock)
        metrics = AgentMetrics()
        jwts = cache(clock, minter, metrics=metrics)
        minter.fail_with = Unavailable("server down")
        with pytest.raises(Unavailable):
            await jwts.fetch(WEB, ("db",))
        minter.fail_with = PermissionDenied("blocked")
        with pytest.raises(PermissionDenied):
            await jwts.fetch(WEB, ("db",))
        minter.fail_with = RuntimeError("a bug")
        with pytest.raises(Unavailable):
            await jwts.fetch(WEB, ("db",))
        minter.fail_with = None
        assert (await jwts.fetch(WEB, ("db",))).token == "token-4"
        for outcome, count in (("unavailable", 2), ("refused", 1), ("ok", 1)):
            assert metrics.registry.get_sample_value(
                "meshca_agent_jwt_svid_mints_total", {"outcome": outcome}) == count

    run(scenario)


def test_identity_of_another_trust_domain_is_refused_without_minting() -> None:
    async def scenario() -> None:
        clock = Clock()
        minter = FakeMinter(clock)
        with pytest.raises(PermissionDenied):
            await cache(clock, minter).fetch(
                Identity(SpiffeId.parse("spiffe://b.test/ns/x/sa/y")), ("db",))
        assert minter.calls == []

    run(scenario)


@pytest.mark.parametrize("audience", [(), ("",), ("x" * 1025,), tuple(f"a{i}" for i in range(17))])
def test_audience_rules(audience: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        check_audience(audience)


# ---- the SVID cache's JWT bundles and federated roots ------------------------------------


class FederatingSource(FakeBundleSource):
    jwt_keys: dict[str, Any]
    federated: dict[str, TrustBundle]

    async def fetch(self) -> TrustBundle:
        bundle = await super().fetch()
        return TrustBundle(bundle.trust_domain, bundle.roots, bundle.refresh_hint,
                           bundle.sequence, jwt_keys=dict(self.jwt_keys),
                           federated=dict(self.federated))


def test_jwt_bundles_and_federated_roots_follow_the_source() -> None:
    async def scenario() -> None:
        own, foreign = fake_authority(1), fake_authority(2)
        source = FederatingSource(own.chain, refresh_hint=timedelta(seconds=1))
        key1, key2, fkey = (ec_key("secp256r1", n).public_key() for n in (910, 911, 912))
        source.jwt_keys = {"k1": key1}
        source.federated = {
            "b.test": TrustBundle("b.test", foreign.chain, jwt_keys={"f1": fkey}),
            # A source must never smuggle roots into the own trust domain by its name.
            TRUST_DOMAIN: TrustBundle(TRUST_DOMAIN, foreign.chain),
        }
        svids = SvidCache(FakeSigner(own), source, trust_domain=TRUST_DOMAIN)
        await svids.start()
        try:
            assert svids.jwt_bundles().keys == {"b.test": {"f1": fkey}, TRUST_DOMAIN: {"k1": key1}}
            state = await anext(aiter(svids.watch(WEB)))
            assert state.bundles["b.test"] == foreign.chain
            assert foreign.chain[0] not in state.bundles[TRUST_DOMAIN]
            watch = aiter(svids.watch_jwt_bundles())
            assert (await asyncio.wait_for(anext(watch), STEP)).keys[TRUST_DOMAIN] == {"k1": key1}
            source.jwt_keys = {"k1": key1, "k2": key2}  # a rotation publishes a second key
            changed = await asyncio.wait_for(anext(watch), STEP)
            assert changed.keys[TRUST_DOMAIN] == {"k1": key1, "k2": key2}
            source.federated = {}
            dropped = await asyncio.wait_for(anext(watch), STEP)
            assert set(dropped.keys) == {TRUST_DOMAIN}
        finally:
            await svids.stop()

    run(scenario)
