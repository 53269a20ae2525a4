"""Does the database answer? (The StoreProbe port, for readiness.)"""

from __future__ import annotations

from sqlalchemy import Engine, text

from meshca.infra.db.store_errors import store_call


class SqlStoreProbe:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @store_call
    def ping(self) -> None:
        with self._engine.connect() as connection:
            connection.execute(text("SELECT 1"))
