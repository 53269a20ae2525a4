"""Retention: old audit rows and long-expired certificate rows are deleted, by one replica.

Once per interval each replica tries the `retention` lease; the one that gets it deletes audit
rows older than the audit retention and certificate rows whose notAfter is further in the past
than the certificate grace, in bounded batches (each its own fenced transaction, the lease
renewed in between), then gives the lease back. Revoked certificates are kept like the others
until their own expiry plus the grace: until they expire the CRL must list them. Every replica
counts the rows it sees afterwards, for the `meshca_stored_rows` gauge.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from meshca.core.clock import Clock
from meshca.errors import StoreUnavailable
from meshca.service.ca_ports import Lease, Leases
from meshca.service.pause import pause

log = logging.getLogger(__name__)
RETENTION_LEASE = "retention"
AUDIT = "audit_log"
CERTIFICATES = "issued_certificates"
TABLES = (AUDIT, CERTIFICATES)


class RetentionStore(Protocol):
    """The rows retention deletes (infra/db/retention.py). Raises StoreUnavailable when the
    database does not answer."""

    def prune_batch(self, table: str, cutoff: datetime, limit: int, lease: Lease,
                    now: datetime) -> int | None:
        """Delete up to `limit` rows of `table` older than `cutoff`; how many, or None
        (nothing deleted) when `lease` is no longer ours."""
        ...

    def row_counts(self) -> dict[str, int]: ...


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    audit: timedelta  # audit rows older than this go
    certificates: timedelta  # certificate rows go this long after their notAfter
    batch: int = 1000  # rows per transaction

    def __post_init__(self) -> None:
        if self.audit <= timedelta(0) or self.certificates < timedelta(0) or self.batch < 1:
            raise ValueError("retention periods must be positive and the batch at least 1")


class RetentionJob:
    def __init__(self, store: RetentionStore, leases: Leases, policy: RetentionPolicy,
                 clock: Clock, *, identity: str, lease_ttl: timedelta = timedelta(minutes=2),
                 should_stop: Callable[[], bool] = lambda: False) -> None:
        self._store = store
        self._leases = leases
        self._policy = policy
        self._clock = clock
        self._identity = identity
        self._lease_ttl = lease_ttl
        self._should_stop = should_stop
        self.pruned: Counter[str] = Counter()  # rows deleted by this process, per table
        self.stored: dict[str, int] = {}  # rows per table after the last pass
        self.last_error: str | None = None

    def prune(self) -> dict[str, int] | None:
        """One pass (blocking): rows deleted per table, or None when another replica holds
        the lease."""
        now = self._clock.now()
        lease = self._leases.acquire(RETENTION_LEASE, self._identity, self._lease_ttl, now)
        if lease is None:
            return None
        deleted = Counter({AUDIT: 0, CERTIFICATES: 0})
        cutoffs = ((AUDIT, now - self._policy.audit),
                   (CERTIFICATES, now - self._policy.certificates))
        try:
            for table, cutoff in cutoffs:
                while not self._should_stop():
                    now = self._clock.now()
                    renewed = self._leases.acquire(RETENTION_LEASE, self._identity,
                                                   self._lease_ttl, now)
                    if renewed is None or renewed.fencing != lease.fencing:
                        log.warning("retention lease lost; another replica continues")
                        return dict(deleted)
                    lease = renewed
                    count = self._store.prune_batch(table, cutoff, self._policy.batch, lease, now)
                    if count is None:
                        return dict(deleted)
                    deleted[table] += count
                    self.pruned[table] += count
                    if count < self._policy.batch:
                        break
        finally:
            self._leases.release(lease)
        return dict(deleted)

    def tick(self) -> None:
        """Prune if this replica gets the lease; count the rows either way."""
        deleted = self.prune()
        if deleted and any(deleted.values()):
            log.info("retention deleted %d audit rows and %d certificate rows",
                     deleted[AUDIT], deleted[CERTIFICATES])
        self.stored = self._store.row_counts()

    async def run(self, stop: asyncio.Event, interval: timedelta) -> None:
        never = asyncio.Event()
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.tick)
                self.last_error = None
            except (StoreUnavailable, OSError) as exc:  # logged and retried next interval
                if self.last_error != str(exc):
                    log.warning("retention pass failed (will retry): %s", exc)
                self.last_error = str(exc)
            await pause(stop, never, interval.total_seconds())
