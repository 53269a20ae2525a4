"""SPIFFE federation relationships and their last good bundles, in the shared database.
Implements `service.federation_ports.FederationStore`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from meshca.core.federation import Relationship
from meshca.errors import Conflict, LostLease, NotFound
from meshca.infra.db.audit import append_audit
from meshca.infra.db.lease import holds
from meshca.infra.db.schema import federation
from meshca.infra.db.store_errors import translated
from meshca.service.ca_ports import Lease
from meshca.service.federation_ports import FederationRecord, FetchResult
from meshca.service.ports import AuditEntry

_STORE = "federation"


class SqlFederation:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @translated(_STORE)
    def all(self) -> list[FederationRecord]:
        with self._engine.connect() as connection:
            rows = connection.execute(select(federation).order_by(federation.c.trust_domain))
            return [_record(r) for r in rows.mappings()]

    @translated(_STORE)
    def get(self, trust_domain: str) -> FederationRecord:
        with self._engine.connect() as connection:
            row = connection.execute(select(federation).where(
                federation.c.trust_domain == trust_domain)).mappings().first()
        if row is None:
            raise NotFound(f"federation with {trust_domain}")
        return _record(row)

    @translated(_STORE)
    def put(self, relationship: Relationship, audit: AuditEntry, *, create_only: bool = False,
            ) -> bool:
        r = relationship
        values = {"url": r.url, "profile": r.profile, "endpoint_spiffe_id": r.endpoint_spiffe_id,
                  "bootstrap_pem": r.bootstrap_pem, "web_ca_pem": r.web_ca_pem,
                  "from_flags": r.from_flags, "updated_by": audit.actor,
                  "updated_at": audit.at, "next_fetch_at": None}
        where = federation.c.trust_domain == r.trust_domain
        with self._engine.begin() as connection:
            exists = connection.execute(select(federation.c.trust_domain).where(where)).first()
            if exists is not None and create_only:
                raise Conflict(f"federation with {r.trust_domain} exists already")
            if exists is None:
                connection.execute(insert(federation).values(trust_domain=r.trust_domain,
                                                             **values))
            else:
                connection.execute(update(federation).where(where).values(values))
            append_audit(connection, audit)
        return exists is None

    @translated(_STORE)
    def delete(self, trust_domain: str, audit: AuditEntry) -> None:
        with self._engine.begin() as connection:
            gone = connection.execute(delete(federation).where(
                federation.c.trust_domain == trust_domain)).rowcount
            if not gone:
                raise NotFound(f"federation with {trust_domain}")
            append_audit(connection, audit)

    @translated(_STORE)
    def record_fetch(self, lease: Lease, trust_domain: str, result: FetchResult) -> None:
        values: dict[str, Any] = {"attempted_at": result.at, "outcome": result.outcome,
                                  "error": result.error, "next_fetch_at": result.next_fetch_at}
        if result.document is not None:
            values |= {"document": result.document.decode(), "sequence": result.sequence,
                       "fetched_at": result.at}
            if result.changed:
                values["changed_at"] = result.at
        with self._engine.begin() as connection:
            if not holds(connection, lease, result.at):
                raise LostLease(f"the {lease.name} lease is held by another replica now")
            connection.execute(update(federation).where(
                federation.c.trust_domain == trust_domain).values(values))


def _record(row: Any) -> FederationRecord:
    relationship = Relationship(
        trust_domain=row["trust_domain"], url=row["url"], profile=row["profile"],
        endpoint_spiffe_id=row["endpoint_spiffe_id"], bootstrap_pem=row["bootstrap_pem"],
        web_ca_pem=row["web_ca_pem"], from_flags=bool(row["from_flags"]))
    document = row["document"]
    return FederationRecord(
        relationship=relationship,
        document=document.encode() if document is not None else None,
        sequence=int(row["sequence"]) if row["sequence"] is not None else None,
        fetched_at=row["fetched_at"], changed_at=row["changed_at"],
        attempted_at=row["attempted_at"], outcome=row["outcome"], error=row["error"],
        next_fetch_at=row["next_fetch_at"])
