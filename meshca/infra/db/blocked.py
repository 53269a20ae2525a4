"""Whether an identity is blocked, read on its own (JWT-SVID minting: there is no record to
write, so no transaction of the certificate log to check it in)."""

from __future__ import annotations

import asyncio

from sqlalchemy import Engine, select

from meshca.infra.db.schema import blocked_identities
from meshca.infra.db.store_errors import translated


class SqlBlockedIdentities:
    """`service.ports.BlockedIdentities` on the database: one primary-key look-up per call."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def is_blocked(self, spiffe_id: str) -> bool:
        return await asyncio.to_thread(self._read, spiffe_id)

    @translated("blocked identities")
    def _read(self, spiffe_id: str) -> bool:
        b = blocked_identities.c
        with self._engine.connect() as connection:
            found = connection.execute(select(b.spiffe_id).where(b.spiffe_id == spiffe_id)).first()
        return found is not None
