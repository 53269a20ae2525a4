"""The append-only audit log: written inside the caller's transaction, read by cursor.
`SqlAuditLog` implements the AuditLog port (service/admin_ports.py)."""

from __future__ import annotations

import dataclasses

from sqlalchemy import Connection, Engine, insert, select

from meshca.infra.db.schema import audit_log
from meshca.infra.db.store_errors import store_call
from meshca.service.admin_ports import AuditFilter, AuditRecord
from meshca.service.ports import AuditEntry

_COLUMNS = tuple(f.name for f in dataclasses.fields(AuditEntry))
AuditRow = AuditRecord  # its name before the port


def append_audit(connection: Connection, entry: AuditEntry) -> None:
    connection.execute(insert(audit_log).values({n: getattr(entry, n) for n in _COLUMNS}))


def append_audit_alone(engine: Engine, entry: AuditEntry) -> None:
    """An entry with no mutation to share a transaction with."""
    with engine.begin() as connection:
        append_audit(connection, entry)


def append_audit_many(engine: Engine, entries: list[AuditEntry]) -> None:
    """Several entries in one transaction (e.g. the summaries of refused callers)."""
    if not entries:
        return
    with engine.begin() as connection:
        connection.execute(insert(audit_log), [{n: getattr(e, n) for n in _COLUMNS}
                                               for e in entries])


def list_audit(engine: Engine, *, after_id: int, limit: int) -> list[AuditRecord]:
    query = select(audit_log).where(audit_log.c.id > after_id).order_by(audit_log.c.id).limit(limit)
    with engine.connect() as connection:
        return [AuditRecord(int(r["id"]), AuditEntry(**{n: r[n] for n in _COLUMNS}))
                for r in connection.execute(query).mappings()]


def search_audit(engine: Engine, where: AuditFilter, cursor: int | None, newest_first: bool,
                 limit: int) -> list[AuditRecord]:
    query = select(audit_log)
    for column, wanted in ((audit_log.c.actor, where.actor), (audit_log.c.action, where.action),
                           (audit_log.c.target, where.target)):
        if wanted:
            query = query.where(column.contains(wanted, autoescape=True))
    if cursor is not None:
        query = query.where(audit_log.c.id < cursor if newest_first else audit_log.c.id > cursor)
    query = query.order_by(audit_log.c.id.desc() if newest_first else audit_log.c.id).limit(limit)
    with engine.connect() as connection:
        return [AuditRecord(int(r["id"]), AuditEntry(**{n: r[n] for n in _COLUMNS}))
                for r in connection.execute(query).mappings()]


class SqlAuditLog:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @store_call
    def append(self, entry: AuditEntry) -> None:
        append_audit_alone(self._engine, entry)

    @store_call
    def page(self, after_id: int, limit: int) -> list[AuditRecord]:
        return list_audit(self._engine, after_id=after_id, limit=limit)

    @store_call
    def search(self, where: AuditFilter, cursor: int | None, newest_first: bool,
               limit: int) -> list[AuditRecord]:
        return search_audit(self._engine, where, cursor, newest_first, limit)
