"""A lease in the shared database: at most one holder at a time, with a fencing token.

Acquiring and renewing are one conditional UPDATE (or the first INSERT), atomic on SQLite and
PostgreSQL alike, so two replicas racing can never both win. The fencing token grows whenever
the lease changes hands; a holder that was paused past its expiry finds its token stale and its
writes refused (`holds`), instead of overwriting its successor's work.
Times come from the caller's clock: replicas are expected to keep NTP time, and the TTL should
be much longer than any plausible skew.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, case, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from meshca.infra.db.schema import leases
from meshca.infra.db.store_errors import translated
from meshca.infra.lease_holder import is_gone
from meshca.service.ca_ports import Lease

__all__ = ["Lease", "SqlLeases", "holds"]
log = logging.getLogger(__name__)
_STORE = "leases"


class SqlLeases:
    """`service.ca_ports.Leases` on the shared database."""

    def __init__(self, engine: Engine, *, reclaim: Callable[[str], bool] = is_gone) -> None:
        """`reclaim(holder)`: is that holder provably gone (e.g. killed on this host), so that
        its unexpired lease may be taken over at once instead of after its TTL?"""
        self._engine = engine
        self._reclaim = reclaim

    @translated(_STORE)
    def acquire(self, name: str, holder: str, ttl: timedelta, now: datetime) -> Lease | None:
        """Take or renew the lease; None while someone else holds it unexpired."""
        t = leases.c
        expires = now + ttl
        with self._engine.begin() as connection:
            result = connection.execute(
                update(leases)
                .where(t.name == name, (t.holder == holder) | (t.expires_at <= now))
                .values(holder=holder, expires_at=expires,
                        fencing=t.fencing + case((t.holder == holder, 0), else_=1))
            )
            if result.rowcount == 0:
                try:
                    with connection.begin_nested():
                        connection.execute(insert(leases).values(
                            name=name, holder=holder, fencing=1, expires_at=expires))
                except IntegrityError:
                    if not self._took_over(connection, name, holder, expires):
                        return None  # someone holds it
            row = connection.execute(select(t.fencing).where(t.name == name)).one()
        return Lease(name, holder, int(row[0]), expires)

    def _took_over(self, connection: Connection, name: str, holder: str, expires: datetime) -> bool:
        """Take the lease from a holder that is provably gone; the fencing token moves on."""
        t = leases.c
        current = connection.execute(select(t.holder).where(t.name == name)).scalar_one_or_none()
        if current is None or current == holder or not self._reclaim(current):
            return False
        taken = connection.execute(
            update(leases).where(t.name == name, t.holder == current)
            .values(holder=holder, expires_at=expires, fencing=t.fencing + 1))
        if taken.rowcount == 1:
            log.warning("lease %s taken over from %s, a holder that is no longer running", name, current)
        return taken.rowcount == 1

    @translated(_STORE)
    def release(self, lease: Lease) -> None:
        """Give it up early (clean shutdown), if still ours."""
        t = leases.c
        with self._engine.begin() as connection:
            connection.execute(delete(leases).where(
                t.name == lease.name, t.holder == lease.holder, t.fencing == lease.fencing))

    @translated(_STORE)
    def current(self, name: str) -> Lease | None:
        with self._engine.connect() as connection:
            row = connection.execute(select(leases).where(leases.c.name == name)).mappings().first()
        if row is None:
            return None
        return Lease(row["name"], row["holder"], int(row["fencing"]), row["expires_at"])


def holds(connection: Connection, lease: Lease, now: datetime) -> bool:
    """Inside a write transaction: is `lease` still ours and unexpired? Fence the write if not."""
    t = leases.c
    row = connection.execute(select(t.holder, t.fencing, t.expires_at).where(
        t.name == lease.name)).first()
    return (row is not None and row[0] == lease.holder and int(row[1]) == lease.fencing
            and row[2] > now)
