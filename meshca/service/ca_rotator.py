"""The running rotator: applies what `core/rotation.py` says is due, and operators' requests.

Every replica runs one. Each pass takes the `ca-rotator` lease, applies everything due (one
fenced transaction per action, see `CaLifecycle`) and gives the lease back; a replica that
finds the lease taken retries shortly and then, as a rule, finds nothing left to do. So
exactly one replica acts on each step, and any replica can serve an operator's
prepare/activate/taint: it waits for the lease (up to `lease_wait`) rather than refusing
because another replica happens to be the one rotating.

Between passes it sleeps until `rotation.next_check` (capped by `max_sleep`, so a clock jump
or another replica's change is noticed), or until woken.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from meshca.core import rotation
from meshca.core.clock import Clock
from meshca.core.remote_signing import SignerUnavailable
from meshca.core.rotation import Action, Activate, Kind, Prepare, Prune, RotationPolicy, Withdraw
from meshca.errors import CaUnavailable, Conflict, MeshcaError, Unavailable
from meshca.service.ca_lifecycle import CaLifecycle
from meshca.service.ca_ports import PLUGGED, CaJournal, Lease, Leases
from meshca.service.ca_setup import ROTATOR_LEASE
from meshca.service.pause import pause
from meshca.service.ports import AuditEntry

log = logging.getLogger(__name__)
T = TypeVar("T")


def event_labels(action: Action, manual: bool) -> tuple[str, str, str]:
    """(event, kind, reason) for the rotation-events metric."""
    match action:
        case Prepare(kind=kind, reason=reason):
            event, kind_name = "prepare", kind.value
        case Activate(kind=kind, reason=reason):
            event, kind_name = "activate", kind.value
        case Withdraw(kind=kind, reason=reason):
            event, kind_name = "withdraw", kind.value
        case Prune(kind=kind, reason=reason):
            event, kind_name = "prune", kind.value
    return event, kind_name, "manual" if manual else reason.value


class CaRotator:
    def __init__(self, lifecycle: CaLifecycle, journal: CaJournal, leases: Leases,
                 policy: RotationPolicy, clock: Clock, *, identity: str,
                 lease_ttl: timedelta = timedelta(seconds=60),
                 max_sleep: timedelta = timedelta(seconds=60),
                 lease_wait: timedelta = timedelta(seconds=15),
                 waiting: Callable[[bool], None] = lambda _: None,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """`waiting(True)` while a due rotation cannot reach the key service (Vault): the
        active generations keep signing and the step is retried. `monotonic` and `sleep`
        pace the wait for the lease (a test gives a fake clock's)."""
        self._lifecycle = lifecycle
        self._journal = journal
        self._leases = leases
        self._policy = policy
        self._clock = clock
        self._identity = identity
        self._lease_ttl = lease_ttl
        self._max_sleep = max_sleep
        self._lease_wait = lease_wait
        self._waiting = waiting
        self._monotonic = monotonic
        self._sleep = sleep
        self._lock = threading.Lock()  # the loop and operator requests share one lease holder
        self._wake = asyncio.Event()
        self.events: Counter[tuple[str, str, str]] = Counter()
        self.tainted: Counter[str] = Counter()
        self.last_error: str | None = None

    @property
    def journal(self) -> CaJournal:
        return self._journal

    # ---- operators ------------------------------------------------------------------------
    # With `audit`, the entry is written in the same transaction as the change (outcome as
    # given); when the action is refused (Conflict, NotFound, Unavailable...), nothing
    # changes and the entry is written alone with outcome "refused" and the reason as detail.

    def prepare(self, kind: Kind, *, audit: AuditEntry | None = None,
                ) -> tuple[Action, int | None]:
        """A new generation of `kind` now; returns the action and the new generation's id."""
        return self._manual(lambda generations: rotation.manual_prepare(generations, kind),
                            audit)

    def activate(self, kind: Kind, *, waive_lead: bool = False,
                 audit: AuditEntry | None = None) -> Action:
        return self._manual(lambda generations: rotation.manual_activate(
            self._policy, generations, kind, self._clock.now(), waive_lead=waive_lead),
            audit)[0]

    def taint(self, generation_id: int, *, audit: AuditEntry | None = None) -> list[Action]:
        """Mark a key compromised and rotate away from it at once (same lease hold); the
        replacement's steps follow in their own transactions."""
        def act(lease: Lease) -> list[Action]:
            row = self._journal.row(generation_id)  # NotFound
            if row.kind == PLUGGED:
                raise Conflict("a plugged-in CA generation is not meshca's to taint; replace "
                               "the files in --ca-dir")
            try:
                self._lifecycle.taint(generation_id, lease, audit=audit)
            except ValueError as exc:
                raise Conflict(f"CA generation {generation_id} cannot be tainted: {exc}") from None
            self.tainted[row.kind] += 1
            done = self._lifecycle.run_due(lease)
            self._count(done, manual=False)
            return done
        return self._audited(audit, lambda: self._with_lease(act))

    # ---- the loop -------------------------------------------------------------------------

    def tick(self) -> datetime:
        """One pass (blocking): apply what is due if the lease is free; when to look again."""
        now = self._clock.now()
        with self._lock:
            lease = self._leases.acquire(ROTATOR_LEASE, self._identity, self._lease_ttl, now)
            if lease is None:
                return now + timedelta(seconds=5)  # another replica is acting; look again soon
            try:
                done = self._lifecycle.run_due(lease)
            finally:
                self._leases.release(lease)
        self._count(done, manual=False)
        generations, _ = self._journal.snapshot()
        later = rotation.next_check(self._policy, generations, self._clock.now(),
                                    external_roots=self._lifecycle.external_roots)
        cap = self._clock.now() + self._max_sleep
        return min(later, cap) if later is not None else cap

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event, *, changed: Callable[[], None]) -> None:
        """Pass after pass until `stop`; `changed` runs after a pass that changed the journal."""
        while not stop.is_set():
            self._wake.clear()
            before = sum(self.events.values())
            try:
                due = await asyncio.to_thread(self.tick)
                self.last_error = None
                self._waiting(False)
            except SignerUnavailable as exc:
                if self.last_error != str(exc):
                    log.warning("CA rotation waits for the key service: %s", exc)
                self.last_error = str(exc)
                self._waiting(True)
                due = self._clock.now() + timedelta(seconds=5)
            # Logged and retried: the loop must outlive any pass.
            except (MeshcaError, OSError, RuntimeError, ValueError) as exc:
                if self.last_error != str(exc):
                    log.warning("CA rotation pass failed (will retry): %s", exc)
                self.last_error = str(exc)
                due = self._clock.now() + timedelta(seconds=5)
            if sum(self.events.values()) != before:
                changed()
            delay = max(1.0, (due - self._clock.now()).total_seconds())
            await pause(stop, self._wake, delay)

    # ---- internals ------------------------------------------------------------------------

    def _manual(self, decide: Callable[[list[rotation.Generation]], Action],
                audit: AuditEntry | None) -> tuple[Action, int | None]:
        """An operator's action, decided on the journal as it is under the lease: 409 (Conflict)
        with the rotation rules' reason when the state does not allow it."""
        def act(lease: Lease) -> tuple[Action, int | None]:
            try:
                action = decide(self._journal.snapshot()[0])
            except ValueError as exc:
                raise Conflict(str(exc)) from None
            created = self._lifecycle.apply(action, lease, audit=audit)
            self._count([action], manual=True)
            return action, created
        return self._audited(audit, lambda: self._with_lease(act))

    def _audited(self, audit: AuditEntry | None, change: Callable[[], T]) -> T:
        """Run `change`; if it is refused, record `audit` alone as refused, with the reason."""
        try:
            return change()
        except Exception as exc:
            if audit is not None:
                refused = dataclasses.replace(audit, outcome="refused", detail=str(exc)[:1024])
                try:
                    self._journal.record_alone(refused)
                except Unavailable as failed:  # the refusal itself is what the caller hears
                    log.warning("audit entry for a refused CA operation not written: %s", failed)
            raise

    def _with_lease(self, act: Callable[[Lease], T]) -> T:
        deadline = self._monotonic() + self._lease_wait.total_seconds()
        with self._lock:
            while True:
                lease = self._leases.acquire(ROTATOR_LEASE, self._identity, self._lease_ttl,
                                             self._clock.now())
                if lease is not None:
                    break
                if self._monotonic() > deadline:
                    raise CaUnavailable("another replica holds the CA rotation lease; try again")
                self._sleep(0.2)
            try:
                return act(lease)
            finally:
                self._leases.release(lease)

    def _count(self, actions: list[Action], *, manual: bool) -> None:
        for action in actions:
            self.events[event_labels(action, manual)] += 1
