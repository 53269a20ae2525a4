"""CaReloader directly: reloads only on a change of the source or of a watched file, tells
every listener even if one fails, and keeps serving through a store outage; the stored-policy
follower likewise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from meshca.core.authority import SigningAuthority
from meshca.core.keys import KeyType
from meshca.core.rotation import RotationPolicy
from meshca.service.ca_lifecycle import CaLifecycle, LifecycleProfile
from meshca.service.ca_reload import CaReloader
from meshca.service.ca_source import JournalCaSource
from meshca.service.policy_store import PolicyStore
from meshca.service.policy_sync import follow_stored_policies
from tests.fakes.ca_journal import FakeCaJournal
from tests.fakes.clock import FakeClock
from tests.fakes.keys import FakeKeyBackend
from tests.fakes.policies import FakeStoredPolicies

PROFILE = LifecycleProfile(KeyType.EC_P256, "cluster.local", "meshca", timedelta(days=365),
                           timedelta(days=7))
POLICY = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
          "metadata": {"name": "p", "namespace": "shop"}, "spec": {"action": "DENY", "rules": [{}]}}


class Ca:
    def __init__(self) -> None:
        self.journal = FakeCaJournal()
        self.keys = FakeKeyBackend()
        self.lifecycle = CaLifecycle(self.journal, self.keys, PROFILE, RotationPolicy(),
                                     FakeClock())
        self.lifecycle.run_due(None)
        self.source = JournalCaSource(self.journal, self.keys)


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


def test_refresh_loads_only_when_the_journal_moved() -> None:
    ca = Ca()
    reloader = CaReloader(ca.source)
    first = reloader.current
    assert reloader.refresh() is None
    ca.journal.bump_sequence(FakeClock().now())  # e.g. another replica published a root
    again = reloader.refresh()
    assert again is not None and again is reloader.current and again is not first
    assert reloader.sequence == 3  # root and JWT key published at bootstrap, then the bump


def test_a_watched_file_counts_as_a_change(tmp_path: Path) -> None:
    serving = tmp_path / "serving.pem"
    reloader = CaReloader(Ca().source, watch_files=[serving])
    assert reloader.refresh() is None
    serving.write_text("new")
    assert reloader.refresh() is not None
    assert reloader.refresh() is None


def test_every_listener_hears_of_a_change_even_when_one_fails() -> None:
    ca = Ca()
    reloader = CaReloader(ca.source)
    heard: list[SigningAuthority] = []

    def broken(_: SigningAuthority) -> None:
        raise RuntimeError("listener bug")

    reloader.add_listener(broken)
    reloader.add_listener(heard.append)
    ca.journal.bump_sequence(FakeClock().now())
    assert asyncio.run(reloader.refresh_now())
    assert heard == [reloader.current]
    assert not asyncio.run(reloader.refresh_now())


def test_the_loop_keeps_the_current_ca_through_a_store_outage() -> None:
    ca = Ca()
    reloader = CaReloader(ca.source)
    serving = reloader.current

    async def scenario() -> None:
        stop = asyncio.Event()
        ca.journal.down = True
        task = asyncio.create_task(reloader.run(stop, 3600.0))
        await _until(lambda: reloader._failing)
        assert reloader.current is serving
        ca.journal.down = False
        ca.journal.bump_sequence(FakeClock().now())
        reloader.wake()
        await _until(lambda: reloader.current is not serving)
        stop.set()
        await task

    asyncio.run(scenario())
    assert not reloader._failing


def test_stored_policies_are_followed_through_an_outage() -> None:
    store = PolicyStore()
    stored = FakeStoredPolicies()
    stored.down = True

    async def scenario() -> None:
        stopping = asyncio.Event()
        task = asyncio.create_task(follow_stored_policies(store, stored, stopping, 0.001))
        await _until(lambda: stored.polls >= 3)  # failed polls: logged, not fatal
        assert not task.done()
        stored.down = False
        stored.put("shop", "p", POLICY)
        await _until(lambda: "shop/p" in {p.key for p in store.current.policies})
        stopping.set()
        await task

    asyncio.run(scenario())
