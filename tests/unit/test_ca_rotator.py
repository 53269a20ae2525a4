"""CaRotator and CaLifecycle on in-memory ports and a fake clock: automatic passes, operators'
prepare/activate/taint with their audit entry, the lease (waited for, lost), and a journal
that cannot be reached. No sleeping, no database, no subprocess."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from meshca.core import rotation
from meshca.core.keys import KeyType
from meshca.core.rotation import Activate, Kind, Prepare, RotationPolicy, State
from meshca.errors import CaUnavailable, Conflict, LostLease, NotFound, StoreUnavailable
from meshca.service.ca_lifecycle import CaLifecycle, LifecycleProfile
from meshca.service.ca_ports import CaJournal, KeyBackend, Leases
from meshca.service.ca_rotator import CaRotator
from meshca.service.ca_setup import ROTATOR_LEASE, load_signing_authority
from meshca.service.ca_source import JournalCaSource
from meshca.service.ports import AuditEntry
from tests.fakes.ca_journal import FakeCaJournal
from tests.fakes.clock import FakeClock
from tests.fakes.keys import FakeKeyBackend

POLICY = RotationPolicy(publish_lead=timedelta(days=1))
PROFILE = LifecycleProfile(KeyType.EC_P256, "cluster.local", "meshca", timedelta(days=365),
                           timedelta(days=7))
TTL = timedelta(seconds=60)


class Setup:
    def __init__(self, *, remote_kinds: frozenset[str] = frozenset()) -> None:
        self.clock = FakeClock()
        self.journal = FakeCaJournal()
        self.leases = self.journal.leases
        self.keys = FakeKeyBackend(remote_kinds=remote_kinds)
        self.waiting: list[bool] = []
        journal: CaJournal = self.journal  # the fakes satisfy the ports
        leases: Leases = self.leases
        keys: KeyBackend = self.keys
        self.lifecycle = CaLifecycle(journal, keys, PROFILE, POLICY, self.clock)
        self.rotator = CaRotator(self.lifecycle, journal, leases, POLICY, self.clock,
                                 identity="me", lease_ttl=TTL, lease_wait=timedelta(seconds=15),
                                 waiting=self.waiting.append, monotonic=self.clock.monotonic,
                                 sleep=self.clock.sleep)

    def generations(self, kind: Kind, state: State | None = None) -> list[rotation.Generation]:
        return [g for g in self.journal.snapshot()[0]
                if g.kind is kind and (state is None or g.state is state)]

    def entry(self, action: str, target: str) -> AuditEntry:
        return AuditEntry(at=self.clock.now(), actor="token:ops", action=action, target=target,
                          outcome="ok")


@pytest.fixture
def ca() -> Setup:
    return Setup()


def names(actions: list[rotation.Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


# ---- automatic passes ---------------------------------------------------------------------

def test_a_pass_bootstraps_a_signing_chain_and_gives_the_lease_back(ca: Setup) -> None:
    later = ca.rotator.tick()
    assert sum(ca.rotator.events.values()) == 6  # root, intermediate, JWT key: prepare, activate
    assert ca.rotator.events[("prepare", "root", "bootstrap")] == 1
    assert ca.rotator.events[("activate", "jwt", "bootstrap")] == 1
    assert ca.leases.current(ROTATOR_LEASE) is None  # released after the pass
    authority = load_signing_authority(ca.journal, ca.keys)
    root = ca.generations(Kind.ROOT, State.ACTIVE)[0]
    assert authority.bundle.roots[0].serial_number == int(ca.journal.row(root.id).serial, 16)
    assert ca.clock.now() < later <= ca.clock.now() + timedelta(seconds=60)  # max_sleep cap
    assert ca.rotator.tick() and sum(ca.rotator.events.values()) == 6  # nothing more due


def test_a_pass_does_nothing_while_another_replica_holds_the_lease(ca: Setup) -> None:
    assert ca.leases.acquire(ROTATOR_LEASE, "other", TTL, ca.clock.now()) is not None
    assert ca.rotator.tick() == ca.clock.now() + timedelta(seconds=5)
    assert ca.journal.snapshot()[0] == [] and not ca.rotator.events


def test_the_intermediate_rotates_when_its_time_comes(ca: Setup) -> None:
    ca.rotator.tick()
    first = ca.generations(Kind.INTERMEDIATE, State.ACTIVE)[0]
    ca.clock.advance(timedelta(days=7) * POLICY.prepare_at + timedelta(minutes=1))
    ca.rotator.tick()
    assert ca.rotator.events[("prepare", "intermediate", "scheduled")] == 1
    ca.clock.advance(timedelta(days=7) * (POLICY.activate_at - POLICY.prepare_at))
    ca.rotator.tick()
    active = ca.generations(Kind.INTERMEDIATE, State.ACTIVE)
    assert [g.id for g in active] != [first.id] and len(active) == 1
    assert ca.journal.row(first.id).state == State.RETIRED.value


# ---- operators ----------------------------------------------------------------------------

def test_prepare_writes_its_audit_entry_with_the_new_generation(ca: Setup) -> None:
    ca.rotator.tick()
    entry = ca.entry("ca.prepare", "root")
    action, created = ca.rotator.prepare(Kind.ROOT, audit=entry)
    assert isinstance(action, Prepare) and created is not None
    assert ca.journal.row(created).state == State.PREPARED.value
    assert ca.journal.audit == [entry]
    assert ca.rotator.events[("prepare", "root", "manual")] == 1
    assert created in ca.journal.snapshot()[1]  # a prepared root is published at once


def test_activate_before_the_publish_lead_is_refused_and_audited_alone(ca: Setup) -> None:
    ca.rotator.tick()
    ca.rotator.prepare(Kind.ROOT)
    before = ca.journal.version()
    with pytest.raises(Conflict):
        ca.rotator.activate(Kind.ROOT, audit=ca.entry("ca.activate", "root"))
    assert ca.journal.version() == before  # nothing changed
    [refused] = ca.journal.audit
    assert refused.outcome == "refused" and refused.action == "ca.activate" and refused.detail
    action = ca.rotator.activate(Kind.ROOT, waive_lead=True, audit=ca.entry("ca.activate", "root"))
    assert isinstance(action, Activate) and action.retires is not None
    assert [e.outcome for e in ca.journal.audit] == ["refused", "ok"]


def test_taint_rotates_away_at_once_and_counts(ca: Setup) -> None:
    ca.rotator.tick()
    old = ca.generations(Kind.INTERMEDIATE, State.ACTIVE)[0]
    entry = ca.entry("ca.taint", f"generation/{old.id}")
    done = ca.rotator.taint(old.id, audit=entry)
    assert names(done) == ["Prepare", "Activate"]
    assert ca.journal.row(old.id).state == State.TAINTED.value
    assert ca.rotator.tainted["intermediate"] == 1
    assert ca.journal.audit == [entry]
    assert load_signing_authority(ca.journal, ca.keys).generation_id != old.id


def test_tainting_a_root_takes_it_out_of_the_bundle(ca: Setup) -> None:
    ca.rotator.tick()
    root = ca.generations(Kind.ROOT, State.ACTIVE)[0]
    ca.rotator.taint(root.id)
    generations, published = ca.journal.snapshot()
    assert root.id not in published and published
    signing = rotation.signing_generation(generations)
    assert signing is not None and signing.parent_id != root.id


@pytest.mark.parametrize(("target", "error"), [(99, NotFound), ("tainted", Conflict),
                                               ("plugged", Conflict)])
def test_taints_that_cannot_be_done_are_refused_and_audited(
        ca: Setup, target: object, error: type[Exception]) -> None:
    ca.rotator.tick()
    gid = 99
    if target == "tainted":
        gid = ca.generations(Kind.INTERMEDIATE, State.ACTIVE)[0].id
        ca.rotator.taint(gid)
    elif target == "plugged":
        gid = ca.journal.register_plugged(
            certificate_pem="-", serial="abc", subject="CN=ops", key_type="ec-p256",
            location="plugged:/x", not_before=ca.clock.now(), not_after=ca.clock.now(),
            now=ca.clock.now())
    with pytest.raises(error):
        ca.rotator.taint(gid, audit=ca.entry("ca.taint", f"generation/{gid}"))
    assert [e.outcome for e in ca.journal.audit] == ["refused"]


# ---- the lease ----------------------------------------------------------------------------

def test_an_operator_waits_for_the_lease_then_gives_up_with_503(ca: Setup) -> None:
    ca.rotator.tick()
    ca.leases.acquire(ROTATOR_LEASE, "other", timedelta(hours=1), ca.clock.now())
    with pytest.raises(CaUnavailable, match="another replica holds"):
        ca.rotator.prepare(Kind.ROOT, audit=ca.entry("ca.prepare", "root"))
    assert 70 <= len(ca.clock.slept) <= 80  # 15 s in 0.2 s steps, on the fake clock
    assert ca.journal.audit[0].outcome == "refused"


def test_an_operator_gets_the_lease_as_soon_as_it_is_given_back(ca: Setup) -> None:
    ca.rotator.tick()
    other = ca.leases.acquire(ROTATOR_LEASE, "other", timedelta(hours=1), ca.clock.now())
    assert other is not None

    def sleep(seconds: float) -> None:
        ca.clock.sleep(seconds)
        if len(ca.clock.slept) == 3:
            ca.leases.release(other)

    ca.rotator._sleep = sleep
    _, created = ca.rotator.prepare(Kind.INTERMEDIATE)
    assert created is not None and len(ca.clock.slept) == 3


def test_a_rotator_that_lost_its_lease_mid_action_writes_nothing(ca: Setup) -> None:
    """Paused past its lease (here: while storing the new key), another replica took over:
    the fenced write is refused, the journal is as the successor left it."""
    ca.rotator.tick()

    def paused(_: str) -> None:
        ca.clock.advance(TTL + timedelta(seconds=1))
        assert ca.leases.acquire(ROTATOR_LEASE, "successor", TTL, ca.clock.now()) is not None

    ca.keys.memory.on_put = paused
    before = ca.journal.version()
    with pytest.raises(LostLease):
        ca.rotator.prepare(Kind.ROOT, audit=ca.entry("ca.prepare", "root"))
    assert ca.journal.version() == before
    assert [e.outcome for e in ca.journal.audit] == ["refused"]
    assert ca.leases.current(ROTATOR_LEASE).holder == "successor"  # type: ignore[union-attr]


# ---- the loop -----------------------------------------------------------------------------

async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(2000):  # each turn hands the loop to the rotator's thread once
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


def test_the_loop_outlives_an_unreachable_journal_and_recovers(ca: Setup) -> None:
    changes: list[int] = []

    async def scenario() -> None:
        stop = asyncio.Event()
        ca.journal.down = True
        task = asyncio.create_task(ca.rotator.run(stop, changed=lambda: changes.append(1)))
        await _until(lambda: ca.rotator.last_error is not None)
        assert "did not answer" in (ca.rotator.last_error or "")
        ca.journal.down = False
        ca.rotator.wake()
        await _until(lambda: ca.rotator.last_error is None and bool(changes))
        stop.set()
        await task

    asyncio.run(scenario())
    assert load_signing_authority(ca.journal, ca.keys)  # the pass after the outage bootstrapped
    assert ca.waiting[-1] is False


def test_the_loop_waits_for_the_key_service_and_says_so() -> None:
    ca = Setup(remote_kinds=frozenset({"root"}))
    assert ca.keys.fake_remote is not None
    ca.keys.fake_remote.unavailable = True

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(ca.rotator.run(stop, changed=lambda: None))
        await _until(lambda: ca.waiting == [True])
        ca.keys.fake_remote.unavailable = False  # type: ignore[union-attr]
        ca.rotator.wake()
        await _until(lambda: ca.waiting[-1] is False)
        stop.set()
        await task

    asyncio.run(scenario())
    root = ca.generations(Kind.ROOT, State.ACTIVE)[0]
    assert ca.journal.row(root.id).key_location.startswith("remote:")
    intermediate = ca.generations(Kind.INTERMEDIATE, State.ACTIVE)[0]
    assert ca.journal.row(intermediate.id).key_location.startswith("memory:")


def test_a_store_outage_during_an_operator_action_is_503_not_a_crash(ca: Setup) -> None:
    ca.rotator.tick()
    ca.leases.down = True
    with pytest.raises(StoreUnavailable):
        ca.rotator.prepare(Kind.ROOT)


# ---- the lifecycle on its own ---------------------------------------------------------------

def test_keys_are_stored_before_the_row_that_names_them(ca: Setup) -> None:
    def crash(_: str) -> None:
        raise SystemExit("killed")

    ca.keys.memory.on_put = crash
    with pytest.raises(SystemExit):
        ca.lifecycle.run_due(None)
    assert ca.journal.snapshot()[0] == []  # no row without its key
    ca.keys.memory.on_put = lambda _: None
    assert names(ca.lifecycle.run_due(None)) == ["Prepare", "Activate"] * 3
    for g in ca.journal.all():
        key = ca.keys.memory.load(g.key_location)
        if g.kind == "jwt":  # a JWT key's row holds its public key, not a certificate
            assert key.public_key() == load_pem_public_key(g.certificate_pem.encode())
            continue
        cert = x509.load_pem_x509_certificate(g.certificate_pem.encode())
        assert key.public_key() == cert.public_key()


def test_the_journal_source_reports_no_signer_before_bootstrap(ca: Setup) -> None:
    source = JournalCaSource(ca.journal, ca.keys)
    with pytest.raises(CaUnavailable):
        source.load()
    ca.lifecycle.run_due(None)
    loaded = source.load()
    assert loaded.sequence == ca.journal.version()[0] == 2  # the root, then the JWT key
    assert loaded.jwt.signing is not None and len(loaded.jwt.published) == 1
    assert source.version() == ca.journal.version()
