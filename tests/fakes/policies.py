"""In-memory StoredPolicies (service/admin_ports.py): versioned like the SQL adapter."""

from __future__ import annotations

from typing import Any

from meshca.errors import NotFound
from meshca.service.admin_ports import StoredPolicy
from meshca.service.ports import AuditEntry
from tests.fakes.audit import FakeAuditLog


class FakeStoredPolicies:
    def __init__(self, audit: FakeAuditLog | None = None) -> None:
        self.audit = audit or FakeAuditLog()
        self.version = 0
        self.rows: dict[tuple[str, str], StoredPolicy] = {}

    def all(self) -> tuple[int, list[StoredPolicy]]:
        return self.version, [self.rows[k] for k in sorted(self.rows)]

    def put(self, namespace: str, name: str, document: dict[str, Any], audit: AuditEntry,
            ) -> tuple[StoredPolicy, bool]:
        self.audit.check()
        created = (namespace, name) not in self.rows
        self.version += 1
        row = StoredPolicy(namespace, name, self.version, document, audit.actor, audit.at)
        self.rows[(namespace, name)] = row
        self.audit.append(audit)
        return row, created

    def delete(self, namespace: str, name: str, audit: AuditEntry) -> int:
        self.audit.check()
        if self.rows.pop((namespace, name), None) is None:
            raise NotFound(f"authorization policy {namespace}/{name}")
        self.version += 1
        self.audit.append(audit)
        return self.version
