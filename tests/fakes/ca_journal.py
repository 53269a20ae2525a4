"""In-memory `CaJournal` and `CaState` (service/ca_ports.py), with the SQL adapter's rules:
each change is all-or-nothing, fenced by the lease when one is given, and writes its audit
entry with it. The contract suite (tests/integration/test_ca_ports_contract.py) runs the same
cases against this fake and the SQL adapters."""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime

from meshca.core.rotation import PUBLISHED_KINDS, Generation, Kind, State, transition
from meshca.errors import LostLease, NotFound, StoreUnavailable
from meshca.service.ca_ports import PLUGGED, CaGeneration, Lease, NewGeneration
from meshca.service.ports import AuditEntry
from tests.fakes.leases import FakeLeases


@dataclasses.dataclass
class _Row:
    generation: CaGeneration
    created_at: datetime
    pruned_at: datetime | None = None
    retired_at: datetime | None = None


class FakeCaJournal:
    def __init__(self, leases: FakeLeases | None = None) -> None:
        self.leases = leases or FakeLeases()
        self.audit: list[AuditEntry] = []
        self.down = False  # True: every call raises StoreUnavailable
        self._rows: dict[int, _Row] = {}
        self._leaf_expiry: dict[int, datetime] = {}  # issuer id -> latest leaf not_after
        self._sequence = 0
        self._lock = threading.RLock()

    # ---- test helpers -------------------------------------------------------------------

    def record_leaf(self, issuer_id: int, not_after: datetime) -> None:
        """As if a certificate expiring at `not_after` had been issued under `issuer_id`."""
        current = self._leaf_expiry.get(issuer_id)
        self._leaf_expiry[issuer_id] = max(current, not_after) if current else not_after

    # ---- CaJournal ----------------------------------------------------------------------

    def snapshot(self) -> tuple[list[Generation], set[int]]:
        self._check()
        with self._lock:
            rows = [r for _, r in sorted(self._rows.items()) if r.generation.kind != PLUGGED]
            by_root: dict[int, datetime] = {}
            for r in rows:
                expiry = self._leaf_expiry.get(r.generation.id)
                parent = r.generation.parent_id
                if parent is not None and expiry is not None:
                    by_root[parent] = max(by_root.get(parent, expiry), expiry)
            generations = [
                Generation(id=g.id, kind=Kind(g.kind), state=State(g.state),
                           not_before=g.not_before, not_after=g.not_after,
                           prepared_at=r.created_at, parent_id=g.parent_id,
                           last_leaf_expiry=by_root.get(g.id) if g.kind == "root"
                           else self._leaf_expiry.get(g.id), retired_at=r.retired_at)
                for r in rows for g in (r.generation,)
            ]
            published = {r.generation.id for r in rows if r.generation.kind in PUBLISHED_KINDS
                         and r.pruned_at is None and r.generation.state != "tainted"}
            return generations, published

    def add(self, lease: Lease | None, now: datetime, generation: NewGeneration, *,
            audit: AuditEntry | None = None) -> int:
        self._check()
        with self._lock:
            self._fence(lease, now)
            gid = max(self._rows, default=0) + 1
            g = generation
            self._rows[gid] = _Row(CaGeneration(
                id=gid, kind=g.kind.value, parent_id=g.parent_id, subject=g.subject,
                serial=g.serial, key_type=g.key_type, key_location=g.key_location,
                not_before=g.not_before, not_after=g.not_after, state=State.PREPARED.value,
                certificate_pem=g.certificate_pem), created_at=now)
            if g.kind in PUBLISHED_KINDS:
                self._sequence += 1
            self._audit(audit)
            return gid

    def move(self, lease: Lease | None, now: datetime, generation_id: int, target: State, *,
             retires: int | None = None, audit: AuditEntry | None = None) -> None:
        self._check()
        with self._lock:
            self._fence(lease, now)
            moves = [(generation_id, target)]
            if retires is not None:
                moves.append((retires, State.RETIRED))
            staged = {gid: dataclasses.replace(r) for gid, r in self._rows.items()}
            bundle_changed = False
            for gid, state in moves:
                row = staged.get(gid)
                if row is None:
                    raise NotFound(f"CA generation {gid}")
                transition(State(row.generation.state), state)  # ValueError: nothing changes
                row.generation = dataclasses.replace(row.generation, state=state.value)
                if state is State.RETIRED:
                    row.retired_at = now
                bundle_changed |= row.generation.kind in PUBLISHED_KINDS and state is State.TAINTED
            self._rows = staged
            if bundle_changed:
                self._sequence += 1
            self._audit(audit)

    def prune(self, lease: Lease | None, now: datetime, generation_id: int) -> None:
        self._check()
        with self._lock:
            self._fence(lease, now)
            row = self._rows.get(generation_id)
            if row is not None and row.pruned_at is None:
                row.pruned_at = now
            self._sequence += 1

    def version(self) -> tuple[int, tuple[tuple[int, str, bool], ...]]:
        self._check()
        with self._lock:
            return self._sequence, tuple((gid, r.generation.state, r.pruned_at is None)
                                         for gid, r in sorted(self._rows.items()))

    def register_plugged(self, *, certificate_pem: str, serial: str, subject: str,
                         key_type: str, location: str, not_before: datetime,
                         not_after: datetime, now: datetime) -> int:
        self._check()
        with self._lock:
            found = next((r.generation for r in self._rows.values()
                          if r.generation.serial == serial), None)
            if found is not None:
                if found.kind != PLUGGED:
                    raise ValueError(f"serial {serial} belongs to a meshca generation")
                gid = found.id
            else:
                gid = max(self._rows, default=0) + 1
                self._rows[gid] = _Row(CaGeneration(
                    id=gid, kind=PLUGGED, parent_id=None, subject=subject, serial=serial,
                    key_type=key_type, key_location=location, not_before=not_before,
                    not_after=not_after, state=State.ACTIVE.value,
                    certificate_pem=certificate_pem), created_at=now)
            for other, r in self._rows.items():
                if (other != gid and r.generation.kind == PLUGGED
                        and r.generation.state == State.ACTIVE.value):
                    r.generation = dataclasses.replace(r.generation, state=State.RETIRED.value)
            return gid

    def bump_sequence(self, now: datetime) -> None:
        self._check()
        with self._lock:
            self._sequence += 1

    def row(self, generation_id: int) -> CaGeneration:
        self._check()
        row = self._rows.get(generation_id)
        if row is None:
            raise NotFound(f"CA generation {generation_id}")
        return row.generation

    def record_alone(self, entry: AuditEntry) -> None:
        self._check()
        self._audit(entry)

    # ---- CaState ------------------------------------------------------------------------

    def all(self) -> list[CaGeneration]:
        self._check()
        return [r.generation for _, r in sorted(self._rows.items())]

    def bundle_sequence(self) -> int:
        self._check()
        return self._sequence

    # ---- internals ----------------------------------------------------------------------

    def _fence(self, lease: Lease | None, now: datetime) -> None:
        if lease is not None and not self.leases.holds(lease, now):
            raise LostLease(f"lease {lease.name} is no longer held by {lease.holder}")

    def _audit(self, entry: AuditEntry | None) -> None:
        if entry is not None:
            self.audit.append(entry)

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("CA journal: the database did not answer: fake outage")
