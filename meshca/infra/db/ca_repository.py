"""CA generations as rows: which roots and intermediates exist and which one signs."""

from __future__ import annotations

from sqlalchemy import Engine, select

from meshca.infra.db.schema import bundle_state, ca_generations
from meshca.infra.db.store_errors import translated
from meshca.service.ca_ports import CaGeneration

__all__ = ["CaGeneration", "SqlCaRepository", "generation_from_row"]
_STORE = "CA journal"


class SqlCaRepository:
    """`service.ca_ports.CaState` on the database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @translated(_STORE)
    def all(self) -> list[CaGeneration]:
        with self._engine.connect() as connection:
            query = select(ca_generations).order_by(ca_generations.c.id)
            return [generation_from_row(r) for r in connection.execute(query).mappings()]

    @translated(_STORE)
    def bundle_sequence(self) -> int:
        """`spiffe_sequence`: grows on every change of the published roots (CA journal)."""
        with self._engine.connect() as connection:
            value = connection.execute(select(bundle_state.c.sequence)
                                       .where(bundle_state.c.id == 1)).scalar()
        return int(value or 0)


def generation_from_row(row: object) -> CaGeneration:
    return CaGeneration(**{f: row[f] for f in CaGeneration.__dataclass_fields__})  # type: ignore[index]
