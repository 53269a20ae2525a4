"""One behaviour for each CA port, run against the in-memory fake AND the SQL adapters on
SQLite and PostgreSQL, so the fakes the unit tests rely on cannot drift from the real thing."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert

from meshca.core.rotation import Kind, State
from meshca.errors import LostLease, NotFound, StoreUnavailable
from meshca.infra.db.audit import list_audit
from meshca.infra.db.ca_journal import SqlCaJournal
from meshca.infra.db.ca_repository import SqlCaRepository
from meshca.infra.db.engine import migrate, open_engine
from meshca.infra.db.lease import SqlLeases
from meshca.infra.db.schema import issued_certificates
from meshca.service.ca_ports import PLUGGED, CaJournal, CaState, Leases, NewGeneration
from meshca.service.ports import AuditEntry
from tests.fakes.ca_journal import FakeCaJournal

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(seconds=30)


@dataclasses.dataclass
class Ports:
    journal: CaJournal
    state: CaState
    leases: Leases
    audit: Callable[[], list[AuditEntry]]
    leaf: Callable[[int, datetime], None]  # a certificate issued under a generation
    broken: Callable[[], tuple[CaJournal, Leases]]  # the same, with the database unreachable


def _fake() -> Ports:
    journal = FakeCaJournal()

    def broken() -> tuple[CaJournal, Leases]:
        down = FakeCaJournal()
        down.down = down.leases.down = True
        return down, down.leases

    return Ports(journal, journal, journal.leases, lambda: list(journal.audit),
                 journal.record_leaf, broken)


def _sql(engine: Engine, tmp_path: Path) -> Ports:
    counter = iter(range(1, 10**6))

    def leaf(issuer_id: int, not_after: datetime) -> None:
        with engine.begin() as connection:
            connection.execute(insert(issued_certificates).values(
                serial=f"{next(counter):040x}", spiffe_id="spiffe://cluster.local/ns/a/sa/b",
                namespace="a", service_account="b", pod_name=None, pod_uid=None,
                not_before=T0, not_after=not_after, issuer_generation_id=issuer_id,
                fingerprint_sha256="0" * 64, key_type="ECDSA secp256r1", issued_at=T0,
                certificate_pem="-"))

    def broken() -> tuple[CaJournal, Leases]:
        gone = open_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}")
        return SqlCaJournal(gone), SqlLeases(gone)

    return Ports(SqlCaJournal(engine), SqlCaRepository(engine), SqlLeases(engine),
                 lambda: [row.entry for row in list_audit(engine, after_id=0, limit=100)],
                 leaf, broken)


@pytest.fixture(params=["fake", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ports(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ports]:
    if request.param == "fake":
        yield _fake()
        return
    url = (str(request.getfixturevalue("pg_url")) if request.param == "postgres"
           else f"sqlite:///{tmp_path / 'ca.db'}")
    engine = open_engine(url)
    migrate(engine)
    yield _sql(engine, tmp_path)
    engine.dispose()


def _new(kind: Kind, parent_id: int | None = None, serial: str = "1") -> NewGeneration:
    return NewGeneration(kind=kind, parent_id=parent_id, subject=f"CN={kind.value} {serial}",
                         serial=serial, key_type="ec-p256", key_location=f"file:{serial}",
                         not_before=T0, not_after=T0 + timedelta(days=30),
                         certificate_pem=f"pem {serial}")


def _entry(action: str, outcome: str = "ok") -> AuditEntry:
    return AuditEntry(at=T0, actor="token:ops", action=action, target="t", outcome=outcome)


def _chain(ports: Ports) -> tuple[int, int]:
    """An active root with an active intermediate under it."""
    j = ports.journal
    root = j.add(None, T0, _new(Kind.ROOT, serial="a1"))
    j.move(None, T0, root, State.ACTIVE)
    inter = j.add(None, T0, _new(Kind.INTERMEDIATE, root, serial="b1"))
    j.move(None, T0, inter, State.ACTIVE)
    return root, inter


# ---- leases --------------------------------------------------------------------------------

def test_leases_one_holder_renews_and_a_successor_gets_a_new_token(ports: Ports) -> None:
    leases = ports.leases
    first = leases.acquire("rotator", "a", TTL, T0)
    assert first is not None and first.fencing == 1
    assert leases.acquire("rotator", "b", TTL, T0 + timedelta(seconds=10)) is None
    renewed = leases.acquire("rotator", "a", TTL, T0 + timedelta(seconds=20))
    assert renewed is not None and renewed.fencing == 1
    assert renewed.expires_at == T0 + timedelta(seconds=50)
    taken = leases.acquire("rotator", "b", TTL, T0 + timedelta(seconds=50))
    assert taken is not None and (taken.holder, taken.fencing) == ("b", 2)
    assert leases.current("rotator") == taken
    leases.release(renewed)  # no longer a's: nothing happens
    assert leases.current("rotator") == taken
    leases.release(taken)
    assert leases.current("rotator") is None
    again = leases.acquire("rotator", "c", TTL, T0 + timedelta(seconds=51))
    assert again is not None and again.fencing == 1


# ---- the journal ---------------------------------------------------------------------------

def test_a_root_enters_the_bundle_when_prepared_and_leaves_when_tainted(ports: Ports) -> None:
    j = ports.journal
    assert j.snapshot() == ([], set()) and j.version() == (0, ())
    root = j.add(None, T0, _new(Kind.ROOT))
    generations, published = j.snapshot()
    assert [(g.id, g.kind, g.state, g.prepared_at) for g in generations] == [
        (root, Kind.ROOT, State.PREPARED, T0)]
    assert published == {root} and j.version() == (1, ((root, "prepared", True),))
    assert ports.state.bundle_sequence() == 1
    j.move(None, T0, root, State.TAINTED)
    assert j.snapshot()[1] == set() and j.version()[0] == 2


def test_an_intermediate_does_not_move_the_bundle(ports: Ports) -> None:
    root, _ = _chain(ports)
    assert ports.journal.version()[0] == 1
    row = ports.journal.row(root)
    assert (row.kind, row.state, row.serial, row.certificate_pem) == ("root", "active", "a1",
                                                                     "pem a1")
    assert [g.kind for g in ports.state.all()] == ["root", "intermediate"]


def test_activation_retires_the_predecessor_in_the_same_change(ports: Ports) -> None:
    root, inter = _chain(ports)
    successor = ports.journal.add(None, T0, _new(Kind.INTERMEDIATE, root, serial="b2"))
    ports.journal.move(None, T0, successor, State.ACTIVE, retires=inter)
    states = {g.id: g.state for g in ports.journal.snapshot()[0]}
    assert states[inter] is State.RETIRED and states[successor] is State.ACTIVE


def test_an_illegal_move_changes_nothing_not_even_the_first_half(ports: Ports) -> None:
    root, inter = _chain(ports)
    ports.journal.move(None, T0, inter, State.TAINTED)
    successor = ports.journal.add(None, T0, _new(Kind.INTERMEDIATE, root, serial="b2"))
    before = ports.journal.version()
    with pytest.raises(ValueError):  # tainted -> retired is not a transition
        ports.journal.move(None, T0, successor, State.ACTIVE, retires=inter,
                           audit=_entry("ca.activate"))
    assert ports.journal.version() == before and ports.audit() == []
    with pytest.raises(NotFound):
        ports.journal.move(None, T0, 999, State.ACTIVE)
    with pytest.raises(NotFound):
        ports.journal.row(999)


def test_prune_takes_a_root_out_of_the_bundle(ports: Ports) -> None:
    root, _ = _chain(ports)
    ports.journal.move(None, T0, root, State.RETIRED)
    ports.journal.prune(None, T0, root)
    assert ports.journal.snapshot()[1] == set()
    assert ports.journal.version() == (2, ((root, "retired", False), (root + 1, "active", True)))


def test_the_last_leaf_expiry_is_known_per_intermediate_and_per_root(ports: Ports) -> None:
    root, inter = _chain(ports)
    ports.leaf(inter, T0 + timedelta(hours=1))
    ports.leaf(inter, T0 + timedelta(hours=3))
    by_id = {g.id: g for g in ports.journal.snapshot()[0]}
    assert by_id[inter].last_leaf_expiry == T0 + timedelta(hours=3)
    assert by_id[root].last_leaf_expiry == T0 + timedelta(hours=3)


def test_changes_write_their_audit_entry_with_them(ports: Ports) -> None:
    _, inter = _chain(ports)
    prepared = ports.journal.add(None, T0, _new(Kind.ROOT, serial="a2"),
                                 audit=_entry("ca.prepare"))
    ports.journal.move(None, T0, inter, State.TAINTED, audit=_entry("ca.taint"))
    ports.journal.record_alone(_entry("ca.activate", "refused"))
    assert [(e.action, e.outcome) for e in ports.audit()] == [
        ("ca.prepare", "ok"), ("ca.taint", "ok"), ("ca.activate", "refused")]
    assert prepared in ports.journal.snapshot()[1]


def test_a_write_under_a_lost_lease_is_refused_and_changes_nothing(ports: Ports) -> None:
    mine = ports.leases.acquire("ca-rotator", "a", TTL, T0)
    assert mine is not None
    root = ports.journal.add(mine, T0, _new(Kind.ROOT))
    late = T0 + TTL + timedelta(seconds=1)
    with pytest.raises(LostLease):  # expired, even with nobody else holding it
        ports.journal.move(mine, late, root, State.ACTIVE)
    assert ports.leases.acquire("ca-rotator", "b", TTL, late) is not None
    before = ports.journal.version()
    for write in (lambda: ports.journal.add(mine, late, _new(Kind.ROOT, serial="2"),
                                            audit=_entry("ca.prepare")),
                  lambda: ports.journal.move(mine, late, root, State.ACTIVE),
                  lambda: ports.journal.prune(mine, late, root)):
        with pytest.raises(LostLease):
            write()
    assert ports.journal.version() == before and ports.audit() == []


def test_a_plugged_ca_is_recorded_once_and_kept_out_of_rotation(ports: Ports) -> None:
    j = ports.journal
    root, _ = _chain(ports)

    def plug(serial: str) -> int:
        return j.register_plugged(certificate_pem="pem", serial=serial, subject="CN=ops",
                                  key_type="ec-p256", location="plugged:/ca/ca-key.pem",
                                  not_before=T0, not_after=T0 + timedelta(days=1), now=T0)

    first = plug("p1")
    assert plug("p1") == first
    second = plug("p2")
    rows = {g.id: g for g in ports.state.all()}
    assert rows[first].state == "retired" and rows[second].state == "active"
    assert rows[second].kind == PLUGGED
    assert {g.id for g in j.snapshot()[0]} == {root, root + 1}  # not part of rotation
    with pytest.raises(ValueError, match="belongs to a meshca generation"):
        plug("a1")
    before = j.version()[0]
    j.bump_sequence(T0)
    assert j.version()[0] == before + 1


def test_an_unreachable_database_is_store_unavailable(ports: Ports) -> None:
    journal, leases = ports.broken()
    for call in (journal.snapshot, journal.version, lambda: journal.row(1),
                 lambda: journal.add(None, T0, _new(Kind.ROOT)),
                 lambda: leases.acquire("x", "a", TTL, T0)):
        with pytest.raises(StoreUnavailable, match="did not answer"):
            call()
