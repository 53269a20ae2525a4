"""Deleting old rows in bounded batches, each in its own short transaction fenced by a lease.

A batch is `DELETE … WHERE key IN (SELECT key … LIMIT n)`, the same SQL on SQLite and
PostgreSQL, found through an index on the age column: no transaction holds locks for long,
and issuance commits in between.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Engine, Table, delete, func, select

from meshca.infra.db.lease import Lease, holds
from meshca.infra.db.schema import audit_log, issued_certificates
from meshca.infra.db.store_errors import translated
from meshca.service.retention import AUDIT, CERTIFICATES, TABLES

__all__ = ["AUDIT", "CERTIFICATES", "TABLES", "SqlRetention"]
_TABLE = {AUDIT: audit_log, CERTIFICATES: issued_certificates}


def _expired(table: str, cutoff: datetime) -> tuple[Table, ColumnElement[bool], ColumnElement[object]]:
    if table == AUDIT:
        return audit_log, audit_log.c.at < cutoff, audit_log.c.id
    if table == CERTIFICATES:
        # Revoked ones too, but only past their own expiry: until then the CRL lists them.
        return (issued_certificates, issued_certificates.c.not_after < cutoff,
                issued_certificates.c.serial)
    raise ValueError(f"no retention for table {table}")


class SqlRetention:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @translated("retention")
    def prune_batch(self, table: str, cutoff: datetime, limit: int, lease: Lease,
                    now: datetime) -> int | None:
        """Delete up to `limit` rows of `table` older than `cutoff`; how many were deleted, or
        None (nothing deleted) when `lease` is no longer ours."""
        target, older, key = _expired(table, cutoff)
        with self._engine.begin() as connection:
            if not holds(connection, lease, now):
                return None
            batch = select(key).where(older).limit(limit).scalar_subquery()
            result = connection.execute(delete(target).where(key.in_(batch)))
            return int(result.rowcount)

    @translated("retention")
    def row_counts(self) -> dict[str, int]:
        with self._engine.connect() as connection:
            return {name: int(connection.execute(select(func.count()).select_from(table))
                              .scalar_one()) for name, table in _TABLE.items()}
