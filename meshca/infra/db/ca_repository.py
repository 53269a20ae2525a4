"""CA generations as rows: which roots and intermediates exist and which one signs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select

from meshca.infra.db.schema import bundle_state, ca_generations


@dataclass(frozen=True, slots=True)
class CaGeneration:
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


class SqlCaRepository:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def all(self) -> list[CaGeneration]:
        with self._engine.connect() as connection:
            query = select(ca_generations).order_by(ca_generations.c.id)
            return [generation_from_row(r) for r in connection.execute(query).mappings()]

    def bundle_sequence(self) -> int:
        """`spiffe_sequence`: grows on every change of the published roots (CA journal)."""
        with self._engine.connect() as connection:
            value = connection.execute(select(bundle_state.c.sequence)
                                       .where(bundle_state.c.id == 1)).scalar()
        return int(value or 0)

def generation_from_row(row: object) -> CaGeneration:
    return CaGeneration(**{f: row[f] for f in CaGeneration.__dataclass_fields__})  # type: ignore[index]
