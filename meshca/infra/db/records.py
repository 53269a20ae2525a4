"""The certificate log, with group commit.

Every issuance must be committed before its response leaves, but one transaction per
request would cap throughput at one database round trip per certificate. Requests that
arrive while a commit is under way wait together and go in the next transaction: under
load one commit carries many records, with no added delay for a lone request.

The same transaction checks what must hold at the moment of issuance (the identity is not
blocked; a renewing caller's certificate is not revoked and its lineage's last token check
is recent enough), so a block or a revocation made on any replica takes effect on the very
next commit, with no cache to go stale. Audit entries (summaries of refused callers, and
impersonations) ride along in the same batches.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Select, func, insert, or_, select
from sqlalchemy.exc import SQLAlchemyError

from meshca.errors import AuthenticationError, CaUnavailable, MeshcaError, PermissionDenied
from meshca.infra.db.record_batch import RecordBatchWriter
from meshca.infra.db.schema import audit_log, blocked_identities, ca_generations, issued_certificates
from meshca.service.ports import AuditEntry, IssuedRecord

log = logging.getLogger(__name__)
MAX_BATCH = 500
_RECORD_COLUMNS = tuple(f.name for f in dataclasses.fields(IssuedRecord))
_AUDIT_COLUMNS = tuple(f.name for f in dataclasses.fields(AuditEntry))


@dataclass(slots=True)
class _Pending:
    record: IssuedRecord | None
    audit: AuditEntry | None
    renewing_serial: str | None
    future: asyncio.Future[None] | None
    token_checked_since: datetime | None = None


class SqlCertificateLog:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._pending: list[_Pending] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None
        # One writer thread: SQLite allows one writer anyway, and batches stay in order.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meshca-records")
        self._batches = RecordBatchWriter(engine, _RECORD_COLUMNS, _AUDIT_COLUMNS)

    async def record(self, record: IssuedRecord, *, renewing_serial: str | None = None,
                     token_checked_since: datetime | None = None) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(_Pending(record, None, renewing_serial, future, token_checked_since))
        await future

    def append(self, entry: AuditEntry) -> None:
        self._enqueue(_Pending(None, entry, None, None))

    def _enqueue(self, item: _Pending) -> None:
        self._pending.append(item)
        if not self._flushing:
            self._flushing = True
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def drain(self) -> None:
        """Return once everything queued so far is written (at shutdown, before `close`)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                try:
                    outcomes = await loop.run_in_executor(self._writer, self._commit, batch)
                except (SQLAlchemyError, self._batches.driver_error) as exc:
                    log.error("could not write %d records: %s", len(batch), type(exc).__name__)
                    outcomes = [CaUnavailable("certificate log is unavailable")] * len(batch)
                for item, outcome in zip(batch, outcomes, strict=True):
                    if item.future is None or item.future.done():
                        continue
                    if outcome is None:
                        item.future.set_result(None)
                    else:
                        item.future.set_exception(outcome)
        finally:
            self._flushing = False

    def _commit(self, batch: list[_Pending]) -> list[MeshcaError | None]:
        if any(item.renewing_serial for item in batch):
            return self._commit_with_renewals(batch)
        outcomes: list[MeshcaError | None] = []

        def admitted(blocked: set[str]) -> list[dict[str, Any]]:
            outcomes.extend(_outcomes(batch, blocked, {}))
            return [_record_row(item, {}) for item, outcome in zip(batch, outcomes, strict=True)
                    if item.record is not None and outcome is None]

        ids = {item.record.spiffe_id for item in batch if item.record is not None}
        audits = [_audit_row(item.audit) for item in batch if item.audit is not None]
        self._batches.write(ids, admitted, audits)
        return outcomes

    def _commit_with_renewals(self, batch: list[_Pending]) -> list[MeshcaError | None]:
        """Batches with a renewal by certificate: its lineage is read in the same transaction."""
        with self._engine.begin() as connection:
            outcomes, inherited = _preconditions(connection, batch)
            rows = [_record_row(item, inherited)
                    for item, outcome in zip(batch, outcomes, strict=True)
                    if item.record is not None and outcome is None]
            audits = [_audit_row(item.audit) for item in batch if item.audit is not None]
            if rows:
                connection.execute(insert(issued_certificates), rows)
            if audits:
                connection.execute(insert(audit_log), audits)
        return outcomes

    def close(self) -> None:
        self._writer.shutdown(wait=True)


def _record_row(item: _Pending, inherited: dict[str, datetime]) -> dict[str, Any]:
    assert item.record is not None
    row = {n: getattr(item.record, n) for n in _RECORD_COLUMNS}
    row["token_checked_at"] = item.record.token_checked_at or inherited.get(item.renewing_serial or "")
    return row


def _audit_row(entry: AuditEntry) -> dict[str, Any]:
    return {n: getattr(entry, n) for n in _AUDIT_COLUMNS}


def renewable(serials: set[str]) -> Select[Any]:
    """Serials that may still authenticate a renewal: on record, not revoked, and not issued
    under a tainted generation (the intermediate itself, or the root above it)."""
    issued, issuer = issued_certificates.c, ca_generations.alias("issuer")
    tainted = select(ca_generations.c.id).where(ca_generations.c.state == "tainted")
    return (select(issued.serial)
            .select_from(issued_certificates.join(issuer, issuer.c.id == issued.issuer_generation_id))
            .where(issued.serial.in_(serials), issued.revoked_at.is_(None),
                   issuer.c.state != "tainted",
                   or_(issuer.c.parent_id.is_(None), issuer.c.parent_id.not_in(tainted))))


def _preconditions(connection: Connection, batch: list[_Pending],
                   ) -> tuple[list[MeshcaError | None], dict[str, datetime]]:
    """Each item's refusal (or None), and the last token check of each renewing serial."""
    ids = {item.record.spiffe_id for item in batch if item.record is not None}
    blocked: set[str] = set()
    if ids:
        blocked = set(connection.execute(
            select(blocked_identities.c.spiffe_id).where(blocked_identities.c.spiffe_id.in_(ids))
        ).scalars())
    serials = {item.renewing_serial for item in batch if item.renewing_serial}
    checked: dict[str, datetime] = {}
    if serials:
        t = issued_certificates.c
        # Rows from before migration 0006 count their own issue time.
        lineage = renewable(serials).add_columns(func.coalesce(t.token_checked_at, t.issued_at))
        checked = {serial: at for serial, at in connection.execute(lineage)}
    return _outcomes(batch, blocked, checked), checked


def _outcomes(batch: list[_Pending], blocked: set[str], checked: dict[str, datetime],
              ) -> list[MeshcaError | None]:
    """Each item's refusal (or None), given the blocked identities and the last token check
    of each renewing serial still on record."""
    outcomes: list[MeshcaError | None] = []
    for item in batch:
        last_check = checked.get(item.renewing_serial or "")
        if item.record is None:
            outcomes.append(None)
        elif item.renewing_serial and last_check is None:
            outcomes.append(AuthenticationError(
                "client certificate is revoked, unknown, or under a CA key marked compromised; "
                "authenticate with a token", reason="certificate"))
        elif item.renewing_serial and last_check is not None and item.token_checked_since \
                and last_check < item.token_checked_since:
            outcomes.append(AuthenticationError(
                f"present a service-account token: the last token check for this identity was "
                f"at {last_check:%Y-%m-%dT%H:%M:%SZ}, longer ago than renewal by certificate "
                f"allows (--max-renewal-age)", reason="renewal_age"))
        elif item.record.spiffe_id in blocked:
            outcomes.append(PermissionDenied("identity is blocked by an administrator"))
        else:
            outcomes.append(None)
    return outcomes
