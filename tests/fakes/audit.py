"""In-memory AuditLog (service/admin_ports.py). The other fakes append a mutation's entry here
only once the mutation succeeded, as the SQL adapters do in one transaction."""

from __future__ import annotations

from meshca.errors import StoreUnavailable
from meshca.service.admin_ports import AuditFilter, AuditRecord
from meshca.service.ports import AuditEntry


class FakeAuditLog:
    def __init__(self) -> None:
        self.records: list[AuditRecord] = []
        self.down = False  # every call raises StoreUnavailable, as the SQL adapter would

    @property
    def entries(self) -> list[AuditEntry]:
        return [r.entry for r in self.records]

    def check(self) -> None:
        if self.down:
            raise StoreUnavailable("the database did not answer: FakeOutage")

    def append(self, entry: AuditEntry) -> None:
        self.check()
        self.records.append(AuditRecord(len(self.records) + 1, entry))

    def page(self, after_id: int, limit: int) -> list[AuditRecord]:
        self.check()
        return [r for r in self.records if r.id > after_id][:limit]

    def search(self, where: AuditFilter, cursor: int | None, newest_first: bool,
               limit: int) -> list[AuditRecord]:
        self.check()
        found = [r for r in self.records
                 if all(not wanted or wanted in have for wanted, have in (
                     (where.actor, r.entry.actor), (where.action, r.entry.action),
                     (where.target, r.entry.target)))]
        if newest_first:
            found = [r for r in reversed(found) if cursor is None or r.id < cursor]
        else:
            found = [r for r in found if cursor is None or r.id > cursor]
        return found[:limit]
