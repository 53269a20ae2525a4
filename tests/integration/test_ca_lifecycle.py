"""The rotation service against the real journal (SQLite and PostgreSQL), on an injected clock:
two years of rotations with taints, every invariant checked at every step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import Engine, insert

from meshca.core import rotation
from meshca.core.keys import KeyType
from meshca.core.rotation import Kind, RotationPolicy, State
from meshca.errors import LostLease
from meshca.infra.db.ca_journal import SqlCaJournal
from meshca.infra.db.ca_repository import SqlCaRepository
from meshca.infra.db.engine import migrate, open_engine
from meshca.infra.db.lease import SqlLeases
from meshca.infra.db.schema import issued_certificates
from meshca.infra.keyfiles import FileKeyStore, KeyEncryptionKey
from meshca.service.ca_lifecycle import CaLifecycle, LifecycleProfile
from meshca.wiring.keystore import KeyBackend

START = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = RotationPolicy(publish_lead=timedelta(days=1))
PROFILE = LifecycleProfile(KeyType.EC_P256, "cluster.local", "meshca", timedelta(days=365),
                           timedelta(days=7))
LEAF_TTL = timedelta(hours=24)


class Clock:
    def __init__(self) -> None:
        self.current = START

    def now(self) -> datetime:
        return self.current


KEK = KeyEncryptionKey.generate()  # one for the module: every store must open the same keys


def _backend(directory: Path) -> KeyBackend:
    files = FileKeyStore(directory, KEK)
    return KeyBackend("file", KEK, files, files, None, frozenset(), None, None)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    url = (str(request.getfixturevalue("pg_url")) if request.param == "postgres"
           else f"sqlite:///{tmp_path / 'ca.db'}")
    engine = open_engine(url)
    migrate(engine)
    request.addfinalizer(engine.dispose)
    return engine


def _lifecycle(engine: Engine, tmp_path: Path, clock: Clock) -> tuple[CaLifecycle, SqlCaJournal]:
    journal = SqlCaJournal(engine)
    return CaLifecycle(journal, _backend(tmp_path), PROFILE, POLICY, clock), journal


def _record_leaf(engine: Engine, issuer_id: int, now: datetime, n: int) -> None:
    with engine.begin() as connection:
        connection.execute(insert(issued_certificates).values(
            serial=f"{n:040x}", spiffe_id="spiffe://cluster.local/ns/a/sa/b", namespace="a",
            service_account="b", pod_name=None, pod_uid=None, not_before=now,
            not_after=now + LEAF_TTL, issuer_generation_id=issuer_id, fingerprint_sha256="0" * 64,
            key_type="ECDSA secp256r1", issued_at=now, certificate_pem="-"))


def test_bootstrap_makes_a_signing_chain(engine: Engine, tmp_path: Path) -> None:
    clock = Clock()
    lifecycle, journal = _lifecycle(engine, tmp_path, clock)
    done = lifecycle.run_due(None)
    assert [type(a).__name__ for a in done] == ["Prepare", "Activate"] * 3  # root, inter., JWT key
    generations, published = journal.snapshot()
    signing = rotation.signing_generation(generations)
    assert signing is not None
    root = next(g for g in generations if g.kind is Kind.ROOT)
    key = next(g for g in generations if g.kind is Kind.JWT)
    assert published == {root.id, key.id}
    assert rotation.jwt_signing_generation(generations) == key
    inter = x509.load_pem_x509_certificate(journal.row(signing.id).certificate_pem.encode())
    inter.verify_directly_issued_by(
        x509.load_pem_x509_certificate(journal.row(root.id).certificate_pem.encode()))
    assert lifecycle.run_due(None) == []  # settled
    assert SqlCaRepository(engine).bundle_sequence() == 2  # the root, then the JWT key


def test_two_years_of_rotations_keep_every_invariant(engine: Engine, tmp_path: Path) -> None:
    clock = Clock()
    lifecycle, journal = _lifecycle(engine, tmp_path, clock)
    lifecycle.run_due(None)
    events: dict[str, int] = {}
    leaf_roots: list[tuple[datetime, int]] = []  # (expiry, root id) of every leaf handed out
    sequence = SqlCaRepository(engine).bundle_sequence()
    step = timedelta(hours=12)
    n = 0
    while clock.current < START + timedelta(days=730):
        clock.current += step
        if clock.current == START + timedelta(days=100):
            generations, _ = journal.snapshot()
            signing = rotation.signing_generation(generations)
            assert signing is not None
            lifecycle.taint(signing.id, None)
        if clock.current == START + timedelta(days=400):
            generations, _ = journal.snapshot()
            root = next(g for g in generations if g.kind is Kind.ROOT and g.state is State.ACTIVE)
            lifecycle.taint(root.id, None)
        for action in lifecycle.run_due(None):
            name = f"{type(action).__name__}:{getattr(action, 'kind', 'root')}"
            events[name] = events.get(name, 0) + 1
        generations, published = journal.snapshot()
        signing = rotation.signing_generation(generations)
        assert signing is not None, f"cannot sign at {clock.current}"
        assert signing.parent_id in published
        # Rotated at 5/6 of a 7-day life: a leaf signed now keeps (almost) its full 24 h.
        assert signing.not_after - clock.current >= LEAF_TTL - step
        n += 1
        _record_leaf(engine, signing.id, clock.current, n)
        leaf_roots.append((clock.current + LEAF_TTL, signing.parent_id))
        tainted = {g.id for g in generations if g.state is State.TAINTED}
        for expiry, root_id in leaf_roots[-8:]:  # every leaf still valid is trusted
            if expiry > clock.current and root_id not in tainted:
                assert root_id in published, f"root {root_id} left while a leaf under it lives"
        kinds = {g.id: g.kind for g in generations}
        assert sum(kinds[i] is Kind.ROOT for i in published) <= 3
        assert sum(kinds[i] is Kind.JWT for i in published) <= 3  # retired, active, prepared
        assert SqlCaRepository(engine).bundle_sequence() >= sequence
        sequence = SqlCaRepository(engine).bundle_sequence()
    roots = {g.id for g in journal.snapshot()[0] if g.kind is Kind.ROOT}
    assert len(roots) >= 3  # yearly rotation plus the taint
    assert events["Activate:intermediate"] >= 100  # weekly, over two years
    assert events["Prune:root"] >= 1
    assert events["Activate:jwt"] >= 100 and events["Prune:jwt"] >= 100


def test_a_rotator_that_lost_its_lease_cannot_write(engine: Engine, tmp_path: Path) -> None:
    clock = Clock()
    lifecycle, journal = _lifecycle(engine, tmp_path, clock)
    leases = SqlLeases(engine)
    lease = leases.acquire("ca-rotator", "replica-a", timedelta(seconds=30), clock.current)
    assert lease is not None
    assert lifecycle.run_due(lease)
    successor = leases.acquire("ca-rotator", "replica-b", timedelta(seconds=30),
                               clock.current + timedelta(seconds=31))
    assert successor is not None and successor.fencing == lease.fencing + 1
    clock.current += timedelta(days=4)  # the intermediate is due for preparation
    before = journal.snapshot()
    with pytest.raises(LostLease):
        lifecycle.run_due(lease)
    assert journal.snapshot() == before


def test_a_crash_between_key_and_row_loses_nothing(engine: Engine, tmp_path: Path) -> None:
    """The key is stored, then the process dies before the row commits: the next run starts
    the step over; every generation in the journal has its key."""
    clock = Clock()
    lifecycle, journal = _lifecycle(engine, tmp_path, clock)
    lifecycle.run_due(None)
    clock.current += timedelta(days=4)
    original_add = journal.add

    def crash(*args: object, **kwargs: object) -> int:
        raise SystemExit("killed")

    journal.add = crash  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        lifecycle.run_due(None)
    journal.add = original_add  # type: ignore[method-assign]
    assert lifecycle.run_due(None)  # resumes: prepares the intermediate again
    keys = FileKeyStore(tmp_path, KEK)
    for generation in journal.snapshot()[0]:
        keys.load(journal.row(generation.id).key_location)  # every key is there
