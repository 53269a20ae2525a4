"""A stand-in for CaRotator as the admin API uses it (service/admin/ca.py's CaOperations):
answers with scripted actions, or raises what it is told to, and records every call."""

from __future__ import annotations

from meshca.core import rotation
from meshca.core.rotation import Action, Activate, Kind, Prepare, Reason


class FakeJournal:
    def __init__(self, generations: list[rotation.Generation], published: set[int]) -> None:
        self.generations = generations
        self.published = published

    def snapshot(self) -> tuple[list[rotation.Generation], set[int]]:
        return list(self.generations), set(self.published)


class FakeRotator:
    def __init__(self, journal: FakeJournal) -> None:
        self._journal = journal
        self.last_error: str | None = None
        self.calls: list[tuple[str, object]] = []
        self.fail: Exception | None = None  # raised by the next operator call
        self.taint_actions: list[Action] = []

    @property
    def journal(self) -> FakeJournal:
        return self._journal

    def _call(self, name: str, argument: object) -> None:
        self.calls.append((name, argument))
        if self.fail is not None:
            raise self.fail

    def prepare(self, kind: Kind) -> tuple[Action, int | None]:
        self._call("prepare", kind)
        return Prepare(kind, None if kind is Kind.ROOT else 1, Reason.SCHEDULED), 42

    def activate(self, kind: Kind, *, waive_lead: bool = False) -> Action:
        self._call("activate", (kind, waive_lead))
        return Activate(42, kind, 7, Reason.SCHEDULED, lead_waived=waive_lead)

    def taint(self, generation_id: int) -> list[Action]:
        self._call("taint", generation_id)
        return list(self.taint_actions)
