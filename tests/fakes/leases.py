"""In-memory `Leases` (service/ca_ports.py), with the SQL adapter's semantics: the fencing
token grows when the lease changes hands, a released lease starts again at 1."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from meshca.errors import StoreUnavailable
from meshca.service.ca_ports import Lease


class FakeLeases:
    def __init__(self) -> None:
        self._held: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self.down = False  # True: every call raises StoreUnavailable, as a database outage

    def acquire(self, name: str, holder: str, ttl: timedelta, now: datetime) -> Lease | None:
        self._check()
        with self._lock:
            held = self._held.get(name)
            if held is None:
                fencing = 1
            elif held.holder == holder:
                fencing = held.fencing
            elif held.expires_at <= now:
                fencing = held.fencing + 1
            else:
                return None
            lease = Lease(name, holder, fencing, now + ttl)
            self._held[name] = lease
            return lease

    def release(self, lease: Lease) -> None:
        self._check()
        with self._lock:
            held = self._held.get(lease.name)
            if held is not None and (held.holder, held.fencing) == (lease.holder, lease.fencing):
                del self._held[lease.name]

    def current(self, name: str) -> Lease | None:
        self._check()
        return self._held.get(name)

    def holds(self, lease: Lease, now: datetime) -> bool:
        """What a fenced write checks: still this holder's, same token, unexpired."""
        held = self._held.get(lease.name)
        return (held is not None and held.holder == lease.holder
                and held.fencing == lease.fencing and held.expires_at > now)

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("leases: the database did not answer: fake outage")
