"""The audit log: reading it by cursor, and the entries the other use cases write."""

from __future__ import annotations

from dataclasses import dataclass

from meshca.core.clock import Clock
from meshca.service.admin_ports import AuditFilter, AuditLog, AuditRecord
from meshca.service.ports import AuditEntry


def audit_entry(clock: Clock, actor: str, action: str, target: str, *,
                detail: str | None = None, outcome: str = "ok") -> AuditEntry:
    """An entry stamped now, by `actor` (a Principal's actor, or "anonymous")."""
    return AuditEntry(at=clock.now(), actor=actor, action=action, target=target,
                      outcome=outcome, detail=detail)


@dataclass(frozen=True, slots=True)
class AuditPage:
    items: tuple[AuditRecord, ...]
    next_after: int | None  # the id to continue after; None at the end


class AuditTrail:
    def __init__(self, log: AuditLog) -> None:
        self._log = log

    def page(self, after_id: int, limit: int) -> AuditPage:
        """Oldest first; append-only, so continuing after the last id never skips or repeats."""
        rows = self._log.page(after_id, limit + 1)
        page, more = rows[:limit], len(rows) > limit
        return AuditPage(tuple(page), page[-1].id if more else None)

    def search(self, where: AuditFilter, cursor: int | None, newest_first: bool,
               limit: int) -> AuditPage:
        """Matching entries newest (or oldest) first; the cursor is the last id shown."""
        rows = self._log.search(where, cursor, newest_first, limit + 1)
        page, more = rows[:limit], len(rows) > limit
        return AuditPage(tuple(page), page[-1].id if more else None)

    def append(self, entry: AuditEntry) -> None:
        """An entry with no mutation of its own (e.g. a refused request), written at once."""
        self._log.append(entry)
