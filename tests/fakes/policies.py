"""In-memory stored authorization policies: the admin side's `StoredPolicies`
(service/admin_ports.py: put/delete audited, versioned like the SQL adapter) and the reading
side policy_sync follows (service/ca_ports.py: version, all). `down` makes every call fail as
the database would."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from meshca.errors import NotFound, StoreUnavailable
from meshca.service.ca_ports import StoredPolicy
from meshca.service.ports import AuditEntry
from tests.fakes.audit import FakeAuditLog


class FakeStoredPolicies:
    def __init__(self, audit: FakeAuditLog | None = None) -> None:
        self.audit = audit or FakeAuditLog()
        self._version = 0
        self.rows: dict[tuple[str, str], StoredPolicy] = {}
        self.down = False
        self.polls = 0  # reads, failed ones included

    def version(self) -> int:
        self._check()
        return self._version

    def all(self) -> tuple[int, list[StoredPolicy]]:
        self._check()
        return self._version, [self.rows[k] for k in sorted(self.rows)]

    def put(self, namespace: str, name: str, document: dict[str, Any],
            audit: AuditEntry | None = None) -> tuple[StoredPolicy, bool]:
        """With an audit entry, as the admin API stores; without one, as a test sets up."""
        if audit is not None:
            self.audit.check()
        created = (namespace, name) not in self.rows
        self._version += 1
        row = StoredPolicy(namespace, name, self._version, document,
                           audit.actor if audit else "test", audit.at if audit else datetime.now(UTC))
        self.rows[(namespace, name)] = row
        if audit is not None:
            self.audit.append(audit)
        return row, created

    def delete(self, namespace: str, name: str, audit: AuditEntry) -> int:
        self.audit.check()
        if self.rows.pop((namespace, name), None) is None:
            raise NotFound(f"authorization policy {namespace}/{name}")
        self._version += 1
        self.audit.append(audit)
        return self._version

    def _check(self) -> None:
        self.polls += 1
        if self.down:
            raise StoreUnavailable("authorization policies: the database did not answer")
