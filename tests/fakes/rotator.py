"""A stand-in for CaRotator as the admin API uses it (service/admin/ca.py's CaOperations):
answers with scripted actions, or raises what it is told to, and records every call."""

from __future__ import annotations

import dataclasses

from meshca.core import rotation
from meshca.core.rotation import Action, Activate, Kind, Prepare, Reason
from meshca.service.ports import AuditEntry
from tests.fakes.audit import FakeAuditLog


class FakeJournal:
    def __init__(self, generations: list[rotation.Generation], published: set[int]) -> None:
        self.generations = generations
        self.published = published

    def snapshot(self) -> tuple[list[rotation.Generation], set[int]]:
        return list(self.generations), set(self.published)


class FakeRotator:
    """Audits as CaRotator does: the entry with the change, or alone as refused."""

    def __init__(self, journal: FakeJournal, audit: FakeAuditLog | None = None) -> None:
        self._journal = journal
        self.audit = audit or FakeAuditLog()
        self.last_error: str | None = None
        self.calls: list[tuple[str, object]] = []
        self.fail: Exception | None = None  # raised by the next operator call
        self.taint_actions: list[Action] = []

    @property
    def journal(self) -> FakeJournal:
        return self._journal

    def _call(self, name: str, argument: object, audit: AuditEntry | None) -> None:
        self.calls.append((name, argument))
        if self.fail is not None:
            if audit is not None:
                self.audit.append(dataclasses.replace(audit, outcome="refused",
                                                      detail=str(self.fail)[:1024]))
            raise self.fail
        if audit is not None:
            self.audit.append(audit)

    def prepare(self, kind: Kind, *, audit: AuditEntry | None = None) -> tuple[Action, int | None]:
        self._call("prepare", kind, audit)
        return Prepare(kind, None if kind is Kind.ROOT else 1, Reason.SCHEDULED), 42

    def activate(self, kind: Kind, *, waive_lead: bool = False,
                 audit: AuditEntry | None = None) -> Action:
        self._call("activate", (kind, waive_lead), audit)
        return Activate(42, kind, 7, Reason.SCHEDULED, lead_waived=waive_lead)

    def taint(self, generation_id: int, *, audit: AuditEntry | None = None) -> list[Action]:
        self._call("taint", generation_id, audit)
        return list(self.taint_actions)
