"""CA generations as rows: which roots and intermediates exist and which one signs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, insert, select, update

from meshca.infra.db.schema import ca_generations


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

    def active(self, kind: str) -> CaGeneration | None:
        query = (
            select(ca_generations)
            .where(ca_generations.c.kind == kind, ca_generations.c.state == "active")
            .order_by(ca_generations.c.id.desc())
            .limit(1)
        )
        with self._engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return generation_from_row(row) if row else None

    def all(self) -> list[CaGeneration]:
        with self._engine.connect() as connection:
            query = select(ca_generations).order_by(ca_generations.c.id)
            return [generation_from_row(r) for r in connection.execute(query).mappings()]

    def bundle_sequence(self) -> int:
        """Grows whenever the bundle changes: one step per root added and per root retired."""
        t = ca_generations.c
        query = select(func.count()).select_from(ca_generations).where(t.kind == "root")
        retired = query.where(t.state.in_(("retired", "tainted")))
        with self._engine.connect() as connection:
            return int(connection.execute(query).scalar_one()) + int(
                connection.execute(retired).scalar_one())

    def count(self, kind: str) -> int:
        query = select(func.count()).select_from(ca_generations).where(ca_generations.c.kind == kind)
        with self._engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def in_bundle(self) -> list[CaGeneration]:
        """Roots peers must trust: every root not yet retired past its last certificate."""
        query = (
            select(ca_generations)
            .where(ca_generations.c.kind == "root", ca_generations.c.state.in_(("prepared", "active")))
            .order_by(ca_generations.c.id)
        )
        with self._engine.connect() as connection:
            return [generation_from_row(r) for r in connection.execute(query).mappings()]

    def add(self, *, kind: str, parent_id: int | None, subject: str, serial: str, key_type: str,
            key_location: str, not_before: datetime, not_after: datetime, state: str,
            certificate_pem: str, created_at: datetime) -> int:
        with self._engine.begin() as connection:
            result = connection.execute(
                insert(ca_generations).values(
                    kind=kind, parent_id=parent_id, subject=subject, serial=serial,
                    key_type=key_type, key_location=key_location, not_before=not_before,
                    not_after=not_after, state=state, certificate_pem=certificate_pem,
                    created_at=created_at,
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def set_state(self, generation_id: int, state: str) -> None:
        with self._engine.begin() as connection:
            connection.execute(
                update(ca_generations).where(ca_generations.c.id == generation_id).values(state=state)
            )


def generation_from_row(row: object) -> CaGeneration:
    return CaGeneration(**{f: row[f] for f in CaGeneration.__dataclass_fields__})  # type: ignore[index]
