"""In-memory `FederationStore` (service/federation_ports.py) with the SQL adapter's behaviour,
and a scripted `BundleFetcher`."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

from meshca.core.federation import Relationship
from meshca.errors import Conflict, LostLease, NotFound, StoreUnavailable
from meshca.service.ca_ports import Lease
from meshca.service.federation_ports import FederationRecord, FetchRequest, FetchResult
from meshca.service.ports import AuditEntry
from tests.fakes.leases import FakeLeases


class FakeFederationStore:
    def __init__(self, leases: FakeLeases | None = None) -> None:
        self.leases = leases or FakeLeases()
        self.audit: list[AuditEntry] = []
        self.down = False
        self._rows: dict[str, FederationRecord] = {}
        self._lock = threading.Lock()

    def all(self) -> list[FederationRecord]:
        self._check()
        return [self._rows[td] for td in sorted(self._rows)]

    def get(self, trust_domain: str) -> FederationRecord:
        self._check()
        found = self._rows.get(trust_domain)
        if found is None:
            raise NotFound(f"federation with {trust_domain}")
        return found

    def put(self, relationship: Relationship, audit: AuditEntry, *, create_only: bool = False,
            ) -> bool:
        self._check()
        with self._lock:
            old = self._rows.get(relationship.trust_domain)
            if old is not None and create_only:
                raise Conflict(f"federation with {relationship.trust_domain} exists already")
            base = old or FederationRecord(relationship)
            self._rows[relationship.trust_domain] = dataclasses.replace(
                base, relationship=relationship, next_fetch_at=None)
            self.audit.append(audit)
        return old is None

    def delete(self, trust_domain: str, audit: AuditEntry) -> None:
        self._check()
        with self._lock:
            if self._rows.pop(trust_domain, None) is None:
                raise NotFound(f"federation with {trust_domain}")
            self.audit.append(audit)

    def record_fetch(self, lease: Lease, trust_domain: str, result: FetchResult) -> None:
        self._check()
        with self._lock:
            if not self.leases.holds(lease, result.at):
                raise LostLease(f"the {lease.name} lease is held by another replica now")
            old = self._rows.get(trust_domain)
            if old is None:
                return
            new = dataclasses.replace(old, attempted_at=result.at, outcome=result.outcome,
                                      error=result.error, next_fetch_at=result.next_fetch_at)
            if result.document is not None:
                new = dataclasses.replace(new, document=result.document,
                                          sequence=result.sequence, fetched_at=result.at,
                                          changed_at=result.at if result.changed
                                          else old.changed_at)
            self._rows[trust_domain] = new

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("federation: the database did not answer: fake outage")


class ScriptedFetcher:
    """Answers each fetch with `respond(request)`: bytes, or raises. Records every request."""

    def __init__(self, respond: Callable[[FetchRequest], bytes]) -> None:
        self.respond = respond
        self.requests: list[FetchRequest] = []

    def fetch(self, request: FetchRequest) -> bytes:
        self.requests.append(request)
        return self.respond(request)
