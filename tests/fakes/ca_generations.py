"""In-memory CaGenerations and StoreProbe (service/admin_ports.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from meshca.errors import StoreUnavailable


@dataclass(frozen=True, slots=True)
class FakeGeneration:
    id: int
    kind: str
    parent_id: int | None
    subject: str
    serial: str
    key_type: str
    key_location: str
    not_before: datetime
    not_after: datetime
    state: str
    certificate_pem: str


class FakeCaGenerations:
    def __init__(self, rows: list[FakeGeneration] | None = None, sequence: int = 1) -> None:
        self.rows = list(rows or [])
        self.sequence = sequence

    def all(self) -> list[FakeGeneration]:
        return sorted(self.rows, key=lambda g: g.id)

    def bundle_sequence(self) -> int:
        return self.sequence


class FakeStoreProbe:
    def __init__(self) -> None:
        self.up = True

    def ping(self) -> None:
        if not self.up:
            raise StoreUnavailable("the database did not answer: FakeOutage")
