"""The CA journal: every root, intermediate and JWT key generation and its state, as rows.

Each transition is one transaction. When a lease is given, the transaction first checks that
it is still held (`holds`), so a rotator that lost its lease cannot write: exactly one
replica rotates, and a stale one is fenced off rather than racing its successor.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from meshca.core.rotation import PUBLISHED_KINDS, Generation, Kind, State, transition
from meshca.errors import LostLease, NotFound
from meshca.infra.db.audit import append_audit
from meshca.infra.db.ca_repository import generation_from_row
from meshca.infra.db.lease import holds
from meshca.infra.db.schema import bundle_state, ca_generations, issued_certificates
from meshca.infra.db.store_errors import translated
from meshca.service.ca_ports import PLUGGED, CaGeneration, Lease, NewGeneration
from meshca.service.ports import AuditEntry

__all__ = ["PLUGGED", "LostLease", "SqlCaJournal"]
_STORE = "CA journal"


class SqlCaJournal:
    """`service.ca_ports.CaJournal` on the database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @translated(_STORE)
    def snapshot(self) -> tuple[list[Generation], set[int]]:
        """Every generation, and the ids of the roots and JWT keys published in the bundle."""
        t = ca_generations.c
        leaves = (select(issued_certificates.c.issuer_generation_id,
                         func.max(issued_certificates.c.not_after))
                  .group_by(issued_certificates.c.issuer_generation_id))
        with self._engine.connect() as connection:
            rows = list(connection.execute(select(ca_generations).where(t.kind != PLUGGED)
                                           .order_by(t.id)).mappings())
            last_leaf = {int(g): e for g, e in connection.execute(leaves)}
        by_root: dict[int, datetime] = {}
        for row in rows:
            expiry = last_leaf.get(int(row["id"]))
            if row["parent_id"] is not None and expiry is not None:
                parent = int(row["parent_id"])
                by_root[parent] = max(by_root.get(parent, expiry), expiry)
        generations = [
            Generation(
                id=int(row["id"]), kind=Kind(row["kind"]), state=State(row["state"]),
                not_before=row["not_before"], not_after=row["not_after"],
                prepared_at=row["created_at"], parent_id=row["parent_id"],
                last_leaf_expiry=by_root.get(int(row["id"])) if row["kind"] == "root"
                else last_leaf.get(int(row["id"])),
                retired_at=row["retired_at"],
            )
            for row in rows
        ]
        published = {int(r["id"]) for r in rows if r["kind"] in PUBLISHED_KINDS
                     and r["pruned_at"] is None and r["state"] != "tainted"}
        return generations, published

    @translated(_STORE)
    def add(self, lease: Lease | None, now: datetime, generation: NewGeneration, *,
            audit: AuditEntry | None = None) -> int:
        """A new generation, prepared. A root or JWT key enters the bundle with it (sequence
        bumped)."""
        g = generation
        with self._engine.begin() as connection:
            _fence(connection, lease, now)
            result = connection.execute(insert(ca_generations).values(
                kind=g.kind.value, parent_id=g.parent_id, subject=g.subject, serial=g.serial,
                key_type=g.key_type, key_location=g.key_location, not_before=g.not_before,
                not_after=g.not_after, state=State.PREPARED.value,
                certificate_pem=g.certificate_pem, created_at=now))
            if g.kind in PUBLISHED_KINDS:
                _bump_sequence(connection, now)
            if audit is not None:
                append_audit(connection, audit)
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    @translated(_STORE)
    def move(self, lease: Lease | None, now: datetime, generation_id: int, target: State,
             *, retires: int | None = None, audit: AuditEntry | None = None) -> None:
        """One legal state transition (and the retirement it implies), atomically."""
        with self._engine.begin() as connection:
            _fence(connection, lease, now)
            moves = [(generation_id, target)]
            if retires is not None:
                moves.append((retires, State.RETIRED))
            bundle_changed = False
            for gid, state in moves:
                row = connection.execute(select(ca_generations.c.state, ca_generations.c.kind)
                                         .where(ca_generations.c.id == gid)).first()
                if row is None:
                    raise NotFound(f"CA generation {gid}")
                transition(State(row[0]), state)  # raises ValueError on an illegal move
                values: dict[str, object] = {"state": state.value}
                if state is State.RETIRED:
                    values["retired_at"] = now
                connection.execute(update(ca_generations).where(ca_generations.c.id == gid)
                                   .values(**values))
                bundle_changed |= row[1] in PUBLISHED_KINDS and state is State.TAINTED
            if bundle_changed:
                _bump_sequence(connection, now)
            if audit is not None:
                append_audit(connection, audit)

    @translated(_STORE)
    def prune(self, lease: Lease | None, now: datetime, generation_id: int) -> None:
        with self._engine.begin() as connection:
            _fence(connection, lease, now)
            connection.execute(update(ca_generations)
                               .where(ca_generations.c.id == generation_id,
                                      ca_generations.c.pruned_at.is_(None))
                               .values(pruned_at=now))
            _bump_sequence(connection, now)

    @translated(_STORE)
    def version(self) -> tuple[int, tuple[tuple[int, str, bool], ...]]:
        """Cheap to poll: changes whenever the signing generation or the bundle may have."""
        t = ca_generations.c
        with self._engine.connect() as connection:
            sequence = connection.execute(select(bundle_state.c.sequence)
                                          .where(bundle_state.c.id == 1)).scalar()
            rows = connection.execute(select(t.id, t.state, t.pruned_at).order_by(t.id)).all()
        return int(sequence or 0), tuple((int(r[0]), str(r[1]), r[2] is None) for r in rows)

    @translated(_STORE)
    def register_plugged(self, *, certificate_pem: str, serial: str, subject: str, key_type: str,
                         location: str, not_before: datetime, not_after: datetime,
                         now: datetime) -> int:
        """The plugged-in signing certificate as a row (once per certificate); earlier plugged
        rows are retired. Idempotent, so every process may call it."""
        t = ca_generations.c
        for _ in range(3):
            with self._engine.begin() as connection:
                found = connection.execute(select(t.id, t.kind).where(t.serial == serial)).first()
                if found is not None:
                    if found[1] != PLUGGED:
                        raise ValueError(f"serial {serial} belongs to a meshca generation")
                    gid = int(found[0])
                else:
                    try:
                        with connection.begin_nested():
                            result = connection.execute(insert(ca_generations).values(
                                kind=PLUGGED, parent_id=None, subject=subject, serial=serial,
                                key_type=key_type, key_location=location, not_before=not_before,
                                not_after=not_after, state=State.ACTIVE.value,
                                certificate_pem=certificate_pem, created_at=now))
                    except IntegrityError:
                        continue  # another process registered it first: read it again
                    key = result.inserted_primary_key
                    assert key is not None
                    gid = int(key[0])
                connection.execute(update(ca_generations).where(
                    t.kind == PLUGGED, t.id != gid, t.state == State.ACTIVE.value
                ).values(state=State.RETIRED.value))
                return gid
        raise RuntimeError("could not record the plugged-in CA certificate")

    @translated(_STORE)
    def bump_sequence(self, now: datetime) -> None:
        """The published roots changed outside the journal (a plugged-in CA was reloaded)."""
        with self._engine.begin() as connection:
            _bump_sequence(connection, now)

    @translated(_STORE)
    def row(self, generation_id: int) -> CaGeneration:
        query = select(ca_generations).where(ca_generations.c.id == generation_id)
        with self._engine.connect() as connection:
            found = connection.execute(query).mappings().first()
        if found is None:
            raise NotFound(f"CA generation {generation_id}")
        return generation_from_row(found)

    @translated(_STORE)
    def record_alone(self, entry: AuditEntry) -> None:
        with self._engine.begin() as connection:
            append_audit(connection, entry)


def _fence(connection: Connection, lease: Lease | None, now: datetime) -> None:
    if lease is not None and not holds(connection, lease, now):
        raise LostLease(f"lease {lease.name} is no longer held by {lease.holder}")


def _bump_sequence(connection: Connection, now: datetime) -> None:
    updated = connection.execute(update(bundle_state).where(bundle_state.c.id == 1)
                                 .values(sequence=bundle_state.c.sequence + 1, updated_at=now))
    if updated.rowcount == 0:
        connection.execute(insert(bundle_state).values(id=1, sequence=1, updated_at=now))
