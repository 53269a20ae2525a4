"""The certificate log, with group commit.

Every issuance must be committed before its response leaves, but one transaction per
request would cap throughput at one database round trip per certificate. Requests that
arrive while a commit is under way wait together and go in the next transaction: under
load one commit carries many records, with no added delay for a lone request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine, insert
from sqlalchemy.exc import SQLAlchemyError

from meshca.errors import CaUnavailable
from meshca.infra.db.schema import issued_certificates
from meshca.service.ports import IssuedRecord

log = logging.getLogger(__name__)
MAX_BATCH = 500
_COLUMNS = tuple(f.name for f in dataclasses.fields(IssuedRecord))


class SqlCertificateLog:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._pending: list[tuple[IssuedRecord, asyncio.Future[None]]] = []
        self._flushing = False
        # One writer thread: SQLite allows one writer anyway, and batches stay in order.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meshca-records")

    async def record(self, record: IssuedRecord) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                rows = [{name: getattr(r, name) for name in _COLUMNS} for r, _ in batch]
                try:
                    await loop.run_in_executor(self._writer, self._insert, rows)
                except SQLAlchemyError as exc:
                    log.error("could not record %d certificates: %s", len(rows), type(exc).__name__)
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(CaUnavailable("certificate log is unavailable"))
                    continue
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)
        finally:
            self._flushing = False

    def _insert(self, rows: list[dict[str, object]]) -> None:
        with self._engine.begin() as connection:
            connection.execute(insert(issued_certificates), rows)

    def close(self) -> None:
        self._writer.shutdown(wait=True)
