"""Authorization policies stored through the admin API: one row each, versioned, audited.

`authz_state.version` grows by one with every change, in the same transaction as the change
and its audit entry; workers compare it to the version they loaded to know when to reload.
Implements the StoredPolicies port (service/admin_ports.py).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update

from meshca.errors import NotFound
from meshca.infra.db.audit import append_audit
from meshca.infra.db.schema import authz_policies, authz_state
from meshca.infra.db.store_errors import translated
from meshca.service.ca_ports import StoredPolicy
from meshca.service.ports import AuditEntry

StoredRow = StoredPolicy  # the name the admin routes use
_STORE = "authorization policies"


class SqlPolicies:
    """`service.ca_ports.StoredPolicies` on the database, and the admin API's writes."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @translated(_STORE)
    def version(self) -> int:
        with self._engine.connect() as connection:
            return _version(connection)

    @translated(_STORE)
    def all(self) -> tuple[int, list[StoredRow]]:
        """The set version and every policy, read in one transaction."""
        with self._engine.connect() as connection:
            version = _version(connection)
            rows = connection.execute(select(authz_policies).order_by(
                authz_policies.c.namespace, authz_policies.c.name)).mappings()
            return version, [_row(r) for r in rows]

    @translated(_STORE)
    def put(self, namespace: str, name: str, document: dict[str, Any], audit: AuditEntry,
            ) -> tuple[StoredPolicy, bool]:
        """Create or replace; returns the row and whether it was created."""
        t = authz_policies.c
        with self._engine.begin() as connection:
            version = _bump(connection)
            values = {"version": version, "document": json.dumps(document, sort_keys=True),
                      "updated_by": audit.actor, "updated_at": audit.at}
            changed = connection.execute(update(authz_policies).where(
                t.namespace == namespace, t.name == name).values(values)).rowcount
            if not changed:
                connection.execute(insert(authz_policies).values(namespace=namespace, name=name,
                                                                 **values))
            append_audit(connection, audit)
        return StoredPolicy(namespace, name, version, document, audit.actor, audit.at), not changed

    @translated(_STORE)
    def delete(self, namespace: str, name: str, audit: AuditEntry) -> int:
        t = authz_policies.c
        with self._engine.begin() as connection:
            gone = connection.execute(delete(authz_policies).where(
                t.namespace == namespace, t.name == name)).rowcount
            if not gone:
                raise NotFound(f"authorization policy {namespace}/{name}")
            version = _bump(connection)
            append_audit(connection, audit)
        return version


def _version(connection: Connection) -> int:
    value = connection.execute(select(authz_state.c.version).where(authz_state.c.id == 1)).scalar()
    return int(value or 0)


def _bump(connection: Connection) -> int:
    """The next set version; the UPDATE also serializes concurrent writers on this row."""
    if connection.execute(update(authz_state).where(authz_state.c.id == 1)
                          .values(version=authz_state.c.version + 1)).rowcount == 0:
        connection.execute(insert(authz_state).values(id=1, version=1))
    return _version(connection)


def _row(r: Any) -> StoredPolicy:
    return StoredPolicy(r["namespace"], r["name"], int(r["version"]), json.loads(r["document"]),
                     r["updated_by"], r["updated_at"])
