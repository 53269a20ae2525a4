"""The agent's SVID cache against an in-memory signer and bundle source, on real asyncio
time with leaves of a few seconds: coalescing, renewal, bundle pushes, outages and back-off,
refusals, expiry, idle identities and the metrics."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_der_private_key

from meshca.agent.keys import check_leaf, make_key
from meshca.agent.metrics import AgentMetrics
from meshca.agent.ports import Identity, X509State
from meshca.agent.svid_cache import SvidCache
from meshca.core.spiffe import SpiffeId
from meshca.errors import PermissionDenied, Unavailable
from tests.fakes.agent_server import FakeBundleSource, FakeSigner, fake_authority
from tests.unit.pki import TRUST_DOMAIN

WEB = SpiffeId.for_service_account(TRUST_DOMAIN, "default", "web")
API = SpiffeId.for_service_account(TRUST_DOMAIN, "default", "api")
STEP = 15.0  # generous bound on any single wait, for a loaded machine


class FixedRandom(random.Random):
    """Jitter made predictable: every draw is `value`."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 50))


def make_cache(signer: FakeSigner, bundles: FakeBundleSource | None = None,
               **kw: Any) -> tuple[SvidCache, AgentMetrics]:
    metrics = AgentMetrics()
    kw.setdefault("first_wait", timedelta(seconds=5))
    cache = SvidCache(signer, bundles or FakeBundleSource(signer.authority.chain),
                      trust_domain=TRUST_DOMAIN, metrics=metrics, **kw)
    return cache, metrics


def sample(metrics: AgentMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


def renewals(metrics: AgentMetrics, outcome: str) -> float:
    return sample(metrics, "meshca_agent_svid_renewals_total", outcome=outcome)


async def next_state(stream: AsyncIterator[X509State], timeout: float = STEP) -> X509State:
    return await asyncio.wait_for(anext(stream), timeout)


async def until(condition: Callable[[], bool], timeout: float = STEP) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def leaf(state: X509State) -> x509.Certificate:
    return state.svids[0].chain[0]


def check_state(state: X509State, spiffe_id: SpiffeId) -> None:
    """The SVID names `spiffe_id`, its key is the one served with it, its chain holds no root,
    and it verifies under the bundle it comes with."""
    (svid,) = state.svids
    assert svid.spiffe_id == spiffe_id
    key = load_der_private_key(svid.private_key, None)
    check_leaf(svid.chain, spiffe_id, key.public_key())
    assert all(c.issuer != c.subject for c in svid.chain)
    top = svid.chain[-1]
    (root,) = [r for r in state.bundles[TRUST_DOMAIN] if r.subject == top.issuer]
    top.verify_directly_issued_by(root)  # raises if not


async def closing(stream: AsyncIterator[X509State]) -> None:
    await stream.aclose()  # type: ignore[attr-defined]


# ---- one SVID per identity -------------------------------------------------------------------

def test_concurrent_first_watches_share_one_signing() -> None:
    async def scenario() -> None:
        signer = FakeSigner(ttl=timedelta(minutes=5))
        signer.delay = 0.3  # the watches overlap the signing
        cache, metrics = make_cache(signer)
        await cache.start()
        streams = [cache.watch(Identity(WEB)) for _ in range(5)]
        states = await asyncio.gather(*(next_state(s) for s in streams))
        assert signer.calls == 1
        assert len({leaf(s).serial_number for s in states}) == 1
        check_state(states[0], WEB)
        # Another identity is another SVID, with a key of its own.
        other = cache.watch(Identity(API))
        api_state = await next_state(other)
        check_state(api_state, API)
        assert signer.calls == 2
        assert api_state.svids[0].private_key != states[0].svids[0].private_key
        assert sample(metrics, "meshca_agent_svids_cached") == 2
        assert renewals(metrics, "ok") == 2
        # A later watch of a cached identity is served from the cache.
        late = cache.watch(Identity(WEB))
        assert leaf(await next_state(late)).serial_number == leaf(states[0]).serial_number
        assert signer.calls == 2
        for stream in (*streams, other, late):
            await closing(stream)
        await cache.stop()

    run(scenario)


@pytest.mark.parametrize("key_type", ["ec-p384", "rsa-2048"])
def test_key_types(key_type: str) -> None:
    async def scenario() -> None:
        signer = FakeSigner(ttl=timedelta(minutes=5))
        cache, _ = make_cache(signer, key_type=key_type, ttl=timedelta(minutes=3))
        await cache.start()
        stream = cache.watch(Identity(WEB))
        state = await next_state(stream)
        check_state(state, WEB)
        key = load_der_private_key(state.svids[0].private_key, None)
        assert key.key_size == (384 if key_type == "ec-p384" else 2048)  # type: ignore[union-attr]
        assert signer.asked == [(WEB, timedelta(minutes=3))]
        await closing(stream)
        await cache.stop()

    run(scenario)


def test_the_served_bundle_holds_the_chain_root_too() -> None:
    async def scenario() -> None:
        signer = FakeSigner(ttl=timedelta(minutes=5))
        elsewhere = fake_authority(7).chain  # a bundle without the signer's root
        cache, _ = make_cache(signer, FakeBundleSource(elsewhere))
        await cache.start()
        assert cache.ready()
        stream = cache.watch(Identity(WEB))
        state = await next_state(stream)
        assert state.bundles[TRUST_DOMAIN] == (*elsewhere, signer.root)
        check_state(state, WEB)
        await closing(stream)
        await cache.stop()

    run(scenario)


def test_a_chain_for_another_identity_is_refused() -> None:
    async def scenario() -> None:
        signer = FakeSigner(ttl=timedelta(minutes=5))
        signer.sign_as = API
        cache, metrics = make_cache(signer)
        await cache.start()
        with pytest.raises(PermissionDenied, match="another identity"):
            await next_state(cache.watch(Identity(WEB)))
        assert renewals(metrics, "refused") == 1
        assert cache.cached() == {}
        await cache.stop()

    run(scenario)


def test_an_identity_of_another_trust_domain_is_refused() -> None:
    async def scenario() -> None:
        signer = FakeSigner()
        cache, _ = make_cache(signer)
        await cache.start()
        foreign = SpiffeId.for_service_account("example.org", "default", "web")
        with pytest.raises(PermissionDenied, match="trust domain"):
            await next_state(cache.watch(Identity(foreign)))
        assert signer.calls == 0
        await cache.stop()

    run(scenario)


# ---- renewal and bundle pushes ---------------------------------------------------------------

def test_renewal_at_half_life_reaches_an_open_stream() -> None:
    async def scenario() -> None:
        signer = FakeSigner(ttl=timedelta(seconds=4))
        cache, metrics = make_cache(signer, rng=FixedRandom(0.0))  # no jitter: at 2 s
        await cache.start()
        stream = cache.watch(Identity(WEB))
        first = await next_state(stream)
        got_first = time.monotonic()
        expiry = cache.soonest_expiry()
        assert expiry == leaf(first).not_valid_after_utc
        assert 0 < sample(metrics, "meshca_agent_svid_soonest_expiry_seconds") <= 4.0
        second = await next_state(stream)
        # Not before half its life; before it ran out (the point of renewing early).
        assert time.monotonic() - got_first >= 1.5
        assert datetime.now(UTC) < leaf(first).not_valid_after_utc
        check_state(second, WEB)
        assert leaf(second).serial_number != leaf(first).serial_number
        assert second.svids[0].private_key != first.svids[0].private_key  # a fresh key
        assert signer.calls == 2
        assert renewals(metrics, "ok") == 2
        assert cache.soonest_expiry() == leaf(second).not_valid_after_utc
        await closing(stream)
        await cache.stop()

    run(scenario)


def test_a_bundle_change_reaches_every_watcher_of_every_identity() -> None:
    async def scenario() -> None:
        signer = FakeSigner(ttl=timedelta(minutes=5))
        source = FakeBundleSource(signer.authority.chain, refresh_hint=timedelta(seconds=0.2))
        cache, metrics = make_cache(signer, source)
        await cache.start()
        assert source.fetches == 1
        streams = [cache.watch(Identity(i)) for i in (WEB, WEB, API, API)]
        before = [await next_state(s) for s in streams]
        assert sample(metrics, "meshca_agent_bundle_updates_total") == 1
        new_root = fake_authority(9).chain[0]
        source.roots = (*source.roots, new_root)  # the hint is clamped to 1 s
        after = await asyncio.gather(*(next_state(s) for s in streams))
        for old, new in zip(before, after, strict=True):
            assert new.bundles[TRUST_DOMAIN] == (signer.root, new_root)
            assert leaf(new) == leaf(old)  # the same SVIDs, a new bundle
        assert signer.calls == 2
        assert sample(metrics, "meshca_agent_bundle_updates_total") == 2
        assert source.fetches >= 2
        for stream in streams:
            await closing(stream)
        await cache.stop()

    run(scenario)


def test_a_root_rotation_at_the_signer_reaches_every_identity() -> None:
    async def scenario() -> None:
        signer = FakeSigner(ttl=timedelta(seconds=3))
        source = FakeBundleSource(signer.authority.chain, refresh_hint=timedelta(minutes=5))
        cache, _ = make_cache(signer, source, rng=FixedRandom(0.0))
        await cache.start()
        web, api = cache.watch(Identity(WEB)), cache.watch(Identity(API))
        await next_state(web)
        await next_state(api)
        old_root = signer.root
        signer.rotate()
        # The first renewal under the new root brings it into both identities' bundle.
        web_new, api_new = await next_state(web), await next_state(api)
        for state in (web_new, api_new):
            assert signer.root in state.bundles[TRUST_DOMAIN]
            assert old_root in state.bundles[TRUST_DOMAIN]
        check_state(web_new, WEB)
        await closing(web)
        await closing(api)
        await cache.stop()

    run(scenario)


# ---- the server down -------------------------------------------------------------------------

def test_server_down_serves_cached_then_backs_off_then_recovers(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="meshca.agent.svid_cache")

    async def scenario() -> None:
        signer = FakeSigner(ttl=timedelta(seconds=6))
        # Every draw 0.25: renewal at 3 - 0.15 s, retries after 0.25, 0.5, 1 s...
        cache, metrics = make_cache(signer, rng=FixedRandom(0.25))
        await cache.start()
        stream = cache.watch(Identity(WEB))
        first = await next_state(stream)
        signer.fail_with = Unavailable("connection refused")
        await until(lambda: signer.calls >= 4)  # three failed renewals
        signer.fail_with = None
        # Meanwhile the cached SVID was served to a new watch, without asking the server.
        calls = signer.calls
        late = cache.watch(Identity(WEB))
        assert leaf(await next_state(late)).serial_number == leaf(first).serial_number
        assert signer.calls == calls
        await closing(late)
        # The open stream saw nothing until the server answered again, then the new SVID.
        second = await next_state(stream)
        assert leaf(second).serial_number != leaf(first).serial_number
        assert datetime.now(UTC) < leaf(first).not_valid_after_utc
        assert renewals(metrics, "unavailable") == 3
        assert renewals(metrics, "ok") == 2
        assert sample(metrics, "meshca_agent_svids_cached") == 1
        await closing(stream)
        await cache.stop()

    run(scenario)
    records = [r for r in caplog.records if r.name == "meshca.agent.svid_cache"]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # once per outage
    assert warnings[0].startswith(f"server unavailable, serving cached SVID for {WEB} until ")
    retries = [r.getMessage().split("retry in ")[1].split("s:")[0] for r in records
               if "retry in" in r.getMessage()]
    assert retries == ["0.2", "0.5", "1.0"]  # the back-off grows
    infos = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert any(m.startswith(f"meshca server answered again: SVID for {WEB}") for m in infos)


def test_first_signing_that_keeps_failing_does_not_hang_the_caller() -> None:
    async def scenario() -> None:
        signer = FakeSigner()
        signer.fail_with = Unavailable("connection refused")
        cache, metrics = make_cache(signer, rng=FixedRandom(0.999),
                                    first_wait=timedelta(seconds=1.5))
        await cache.start()
        started = time.monotonic()
        with pytest.raises(Unavailable, match="connection refused"):
            await next_state(cache.watch(Identity(WEB)))
        # Retried once (after ~1 s); the next retry (~2 s later) is past the wait: no hang.
        assert signer.calls == 2
        assert time.monotonic() - started < STEP
        assert renewals(metrics, "unavailable") == 2
        await cache.stop()

    run(scenario)


def test_a_surprise_from_the_signer_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        signer = FakeSigner(ttl=timedelta(minutes=5))
        signer.fail_with = RuntimeError("a bug")
        cache, metrics = make_cache(signer, rng=FixedRandom(0.25))
        await cache.start()
        stream = cache.watch(Identity(WEB))
        pending = asyncio.ensure_future(next_state(stream))
        await until(lambda: signer.calls >= 1)
        signer.fail_with = None
        check_state(await pending, WEB)
        assert renewals(metrics, "unavailable") == 1
        await closing(stream)
        await cache.stop()

    run(scenario)
    assert any(r.exc_info and "failed unexpectedly" in r.getMessage() for r in caplog.records)


def test_a_refused_first_signing_reaches_the_watcher_and_is_not_hammered() -> None:
    async def scenario() -> None:
        signer = FakeSigner()
        signer.fail_with = PermissionDenied("UNAUTHENTICATED: no pod of that identity")
        cache, metrics = make_cache(signer, rng=FixedRandom(0.999))
        await cache.start()
        with pytest.raises(PermissionDenied, match="no pod of that identity"):
            await next_state(cache.watch(Identity(WEB)))
        # Watchers arriving during the back-off hear the refusal without a new call.
        for _ in range(5):
            with pytest.raises(PermissionDenied):
                await next_state(cache.watch(Identity(WEB)))
        assert signer.calls == 1
        await asyncio.sleep(0.5)
        assert signer.calls == 1  # nobody waits: nothing is asked
        assert renewals(metrics, "refused") == 1
        # After the back-off a new watch asks again, and succeeds once the server allows.
        signer.fail_with = None
        await asyncio.sleep(0.6)
        stream = cache.watch(Identity(WEB))
        check_state(await next_state(stream), WEB)
        assert signer.calls == 2
        await closing(stream)
        await cache.stop()

    run(scenario)


def test_after_expiry_streams_wait_and_new_watches_are_unavailable() -> None:
    async def scenario() -> None:
        signer = FakeSigner(ttl=timedelta(seconds=2))
        cache, metrics = make_cache(signer, rng=FixedRandom(0.5),
                                    first_wait=timedelta(seconds=0.5))
        await cache.start()
        stream = cache.watch(Identity(WEB))
        first = await next_state(stream)
        signer.fail_with = Unavailable("down")
        waiting = asyncio.ensure_future(next_state(stream, timeout=40))
        await until(lambda: cache.soonest_expiry() is None)
        assert cache.cached() == {}
        assert datetime.now(UTC) >= leaf(first).not_valid_after_utc
        assert not waiting.done()  # no state without a valid SVID
        assert sample(metrics, "meshca_agent_svids_cached") == 0
        assert cache.soonest_expiry() is None
        assert sample(metrics, "meshca_agent_svid_soonest_expiry_seconds") == float("inf")
        with pytest.raises(Unavailable):
            await next_state(cache.watch(Identity(WEB)))
        # The server answers again: the waiting stream gets a valid SVID.
        signer.fail_with = None
        state = await waiting
        check_state(state, WEB)
        assert leaf(state).not_valid_after_utc > datetime.now(UTC)
        await closing(stream)
        await cache.stop()

    run(scenario)


# ---- idle identities, stop -------------------------------------------------------------------

def test_an_identity_nobody_watches_is_dropped_after_the_idle_lifetime() -> None:
    async def scenario() -> None:
        signer = FakeSigner(ttl=timedelta(minutes=5))
        cache, metrics = make_cache(signer, idle_lifetime=timedelta(seconds=0.5))
        await cache.start()
        stream = cache.watch(Identity(WEB))
        first = await next_state(stream)
        await closing(stream)
        # Within the idle lifetime a returning workload gets the cached SVID.
        again = cache.watch(Identity(WEB))
        assert leaf(await next_state(again)) == leaf(first)
        await closing(again)
        assert signer.calls == 1
        await until(lambda: cache.cached() == {})
        assert sample(metrics, "meshca_agent_svids_cached") == 0
        # A watch after that signs afresh.
        late = cache.watch(Identity(WEB))
        assert leaf(await next_state(late)) != leaf(first)
        assert signer.calls == 2
        await closing(late)
        await cache.stop()

    run(scenario)


def test_an_idle_identity_is_not_renewed_after_it_is_dropped() -> None:
    async def scenario() -> None:
        signer = FakeSigner(ttl=timedelta(seconds=2))
        cache, _ = make_cache(signer, idle_lifetime=timedelta(seconds=0.3),
                              rng=FixedRandom(0.0))
        await cache.start()
        stream = cache.watch(Identity(WEB))
        await next_state(stream)
        await closing(stream)
        await asyncio.sleep(1.5)  # past the renewal time (1 s)
        assert signer.calls == 1
        assert cache.cached() == {}
        await cache.stop()

    run(scenario)


def test_stop_ends_open_streams_and_background_work() -> None:
    async def scenario() -> None:
        signer = FakeSigner(ttl=timedelta(minutes=5))
        source = FakeBundleSource(signer.authority.chain, refresh_hint=timedelta(seconds=1))
        cache, metrics = make_cache(signer, source)
        await cache.start()
        stream = cache.watch(Identity(WEB))
        await next_state(stream)
        pending = asyncio.ensure_future(next_state(stream))
        await asyncio.sleep(0)
        await cache.stop()
        with pytest.raises(Unavailable):
            await pending
        fetches = source.fetches
        await asyncio.sleep(1.3)
        assert source.fetches == fetches
        assert sample(metrics, "meshca_agent_svid_soonest_expiry_seconds") == float("inf")
        with pytest.raises(Unavailable):
            await next_state(cache.watch(Identity(WEB)))

    run(scenario)


# ---- the bundle source down ------------------------------------------------------------------

def test_bundle_source_down_keeps_the_roots_held(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        signer = FakeSigner(ttl=timedelta(minutes=5))
        source = FakeBundleSource(signer.authority.chain, refresh_hint=timedelta(seconds=1))
        source.fail_with = Unavailable("no route to host")
        cache, metrics = make_cache(signer, source, rng=FixedRandom(0.25))
        await cache.start()  # the first fetch failed: started anyway, not ready
        assert not cache.ready()
        # An SVID is still served, with the root its own chain ends in.
        stream = cache.watch(Identity(WEB))
        state = await next_state(stream)
        assert state.bundles[TRUST_DOMAIN] == (signer.root,)
        await until(lambda: source.fetches >= 3)  # retried after 0.25 s, 0.5 s
        extra = fake_authority(8).chain[0]
        source.roots = (*source.roots, extra)
        source.fail_with = None
        await until(cache.ready)
        state = await next_state(stream)
        assert state.bundles[TRUST_DOMAIN] == (signer.root, extra)
        assert sample(metrics, "meshca_agent_bundle_updates_total") == 2
        await closing(stream)
        await cache.stop()

    caplog.set_level(logging.INFO, logger="meshca.agent.svid_cache")
    run(scenario)
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and r.name == "meshca.agent.svid_cache"]
    assert len(warnings) == 1 and "trust bundle unavailable" in warnings[0]


def test_make_key_csr_carries_only_the_uri_san() -> None:
    key = make_key("ec-p256", WEB)
    csr = x509.load_pem_x509_csr(key.csr_pem.encode())
    assert csr.is_signature_valid
    assert csr.subject == x509.Name([])
    (ext,) = csr.extensions
    assert ext.critical
    assert ext.value == x509.SubjectAlternativeName([x509.UniformResourceIdentifier(WEB.uri)])
    assert load_der_private_key(key.pkcs8_der, None).public_key() == key.public_key
    assert "pkcs8" not in repr(key) and "PRIVATE" not in repr(key)

