"""Issued certificates as admins see them: filtered, paged, revoked; and blocked identities.
Implements the CertificateInventory and IdentityBlocklist ports (service/admin_ports.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, and_, delete, insert, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from meshca import errors
from meshca.infra.db.audit import append_audit
from meshca.infra.db.records import renewable
from meshca.infra.db.schema import blocked_identities, ca_generations, issued_certificates
from meshca.infra.db.store_errors import store_call
from meshca.service.admin_ports import (
    BlockedIdentity,
    CertificateDetail,
    CertificateFilter,
    CertificateSummary,
    Position,
    RevokedEntry,
)
from meshca.service.ports import AuditEntry

# Re-exported: the tree's own classes (meshca/errors.py), raised by this adapter, and the
# port's types, which lived here before.
NotFound = errors.NotFound
Conflict = errors.Conflict
__all__ = ["CertificateFilter", "Conflict", "DeniedIdentities", "NotFound", "Position",
           "RevokedEntry", "SqlInventory"]


@dataclass(frozen=True, slots=True)
class DeniedIdentities:
    """What may no longer authenticate a workload, read in one transaction (ext_authz keeps it
    as a snapshot): blocked SPIFFE IDs, serials of revoked certificates that have not expired,
    and the certificates (PEM) of CA generations whose leaves are no longer trusted: tainted
    ones and those under a tainted root."""

    blocked: frozenset[str]
    revoked_serials: frozenset[str]
    tainted_issuers: tuple[str, ...]


_SUMMARY_FIELDS = tuple(CertificateSummary.__dataclass_fields__)
_SUMMARY = [issued_certificates.c[name] for name in _SUMMARY_FIELDS]
_DETAIL = [*_SUMMARY, issued_certificates.c.certificate_pem]


def _summary(row: RowMapping) -> CertificateSummary:
    return CertificateSummary(**{name: row[name] for name in _SUMMARY_FIELDS})


def _detail(row: RowMapping) -> CertificateDetail:
    return CertificateDetail(**{name: row[name] for name in _SUMMARY_FIELDS},
                             certificate_pem=row["certificate_pem"])


def _utc(value: datetime) -> datetime:
    """A caller's aware time in UTC. One whose UTC form is outside datetime's range (year 1 at
    +14:00, year 9999 at -14:00) becomes the nearest representable instant, which compares the
    same against every stored time, instead of an OverflowError when it is bound."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return (datetime.min if value.year == datetime.min.year else datetime.max).replace(tzinfo=UTC)


class SqlInventory:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @store_call
    def page(self, where: CertificateFilter, after: Position | None, limit: int,
             now: datetime) -> list[CertificateSummary]:
        t = issued_certificates.c
        query = select(*_SUMMARY)
        if where.spiffe_id_prefix:
            escaped = (where.spiffe_id_prefix.replace("\\", "\\\\").replace("%", "\\%")
                       .replace("_", "\\_"))
            query = query.where(t.spiffe_id.like(f"{escaped}%", escape="\\"))
        if where.namespace:
            query = query.where(t.namespace == where.namespace)
        if where.service_account:
            query = query.where(t.service_account == where.service_account)
        if where.active is True:
            query = query.where(t.revoked_at.is_(None), t.not_before <= now, t.not_after > now)
        elif where.active is False:
            query = query.where(or_(t.revoked_at.is_not(None), t.not_before > now,
                                    t.not_after <= now))
        if where.expiring_before:
            query = query.where(t.not_after < _utc(where.expiring_before))
        if where.serial_prefix:  # hex only (the API checks), so nothing to escape
            query = query.where(t.serial.like(f"{where.serial_prefix}%"))
        if after is not None:
            issued_at = _utc(after.issued_at)
            query = query.where(or_(t.issued_at > issued_at,
                                    and_(t.issued_at == issued_at, t.serial > after.serial)))
        query = query.order_by(t.issued_at, t.serial).limit(limit)
        with self._engine.connect() as connection:
            return [_summary(r) for r in connection.execute(query).mappings()]

    @store_call
    def get(self, serial: str) -> CertificateDetail:
        query = select(*_DETAIL).where(issued_certificates.c.serial == serial)
        with self._engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        if row is None:
            raise NotFound(serial)
        return _detail(row)

    @store_call
    def usable(self, serial: str) -> bool:
        """On record, not revoked, not under a tainted key (validity itself is checked by TLS)."""
        with self._engine.connect() as connection:
            return connection.execute(renewable({serial})).first() is not None

    @store_call
    def revoke(self, serial: str, reason: str, audit: AuditEntry) -> None:
        t = issued_certificates.c
        with self._engine.begin() as connection:
            current = connection.execute(
                select(t.revoked_at).where(t.serial == serial).with_for_update()
            ).first()
            if current is None:
                raise NotFound(serial)
            if current[0] is not None:
                raise Conflict(f"certificate {serial} is already revoked")
            connection.execute(update(issued_certificates).where(t.serial == serial)
                               .values(revoked_at=audit.at, revocation_reason=reason))
            append_audit(connection, audit)

    @store_call
    def revoked_by(self, issuer_generation_id: int, now: datetime) -> list[RevokedEntry]:
        """Revoked and not yet expired certificates of one issuer: the CRL's entries."""
        t = issued_certificates.c
        query = (select(t.serial, t.revoked_at, t.revocation_reason)
                 .where(t.issuer_generation_id == issuer_generation_id,
                        t.revoked_at.is_not(None), t.not_after > now)
                 .order_by(t.serial))
        with self._engine.connect() as connection:
            return [RevokedEntry(r[0], r[1], r[2]) for r in connection.execute(query)]

    @store_call
    def block(self, spiffe_id: str, reason: str, audit: AuditEntry) -> None:
        try:
            with self._engine.begin() as connection:
                connection.execute(insert(blocked_identities).values(
                    spiffe_id=spiffe_id, reason=reason, blocked_by=audit.actor, blocked_at=audit.at))
                append_audit(connection, audit)
        except IntegrityError:
            raise Conflict(f"{spiffe_id} is already blocked") from None

    @store_call
    def unblock(self, spiffe_id: str, audit: AuditEntry) -> None:
        with self._engine.begin() as connection:
            result = connection.execute(
                delete(blocked_identities).where(blocked_identities.c.spiffe_id == spiffe_id))
            if result.rowcount != 1:
                raise NotFound(spiffe_id)
            append_audit(connection, audit)

    @store_call
    def blocked(self) -> list[BlockedIdentity]:
        b = blocked_identities.c
        query = (select(b.spiffe_id, b.reason, b.blocked_by, b.blocked_at)
                 .order_by(b.spiffe_id))
        with self._engine.connect() as connection:
            return [BlockedIdentity(*r) for r in connection.execute(query)]

    @store_call
    def denied_identities(self, now: datetime) -> DeniedIdentities:
        t, g = issued_certificates.c, ca_generations.c
        tainted = select(g.id).where(g.state == "tainted")
        with self._engine.connect() as connection:
            blocked = connection.execute(select(blocked_identities.c.spiffe_id)).scalars()
            revoked = connection.execute(select(t.serial).where(
                t.revoked_at.is_not(None), t.not_after > _utc(now))).scalars()
            # A JWT key's row holds a public key, not a certificate: it issues no certificates.
            issuers = connection.execute(select(g.certificate_pem).where(
                or_(g.state == "tainted", g.parent_id.in_(tainted)), g.kind != "jwt")
                .order_by(g.id)).scalars()
            return DeniedIdentities(frozenset(blocked), frozenset(revoked), tuple(issuers))
