"""In-memory CertificateInventory and IdentityBlocklist (service/admin_ports.py)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from meshca.errors import Conflict, NotFound
from meshca.service.admin_ports import (
    BlockedIdentity,
    CertificateDetail,
    CertificateFilter,
    CertificateSummary,
    Position,
    RevokedEntry,
)
from meshca.service.ports import AuditEntry
from tests.fakes.audit import FakeAuditLog


class FakeInventory:
    def __init__(self, audit: FakeAuditLog | None = None) -> None:
        self.audit = audit or FakeAuditLog()
        self.certificates: dict[str, CertificateDetail] = {}
        self.generations: dict[int, tuple[str, int | None]] = {}  # id: (state, parent id)
        self.blocklist: dict[str, BlockedIdentity] = {}

    # ---- seeding (not part of the port) ---------------------------------------------------

    def add_generation(self, generation_id: int, state: str = "active",
                       parent_id: int | None = None) -> None:
        self.generations[generation_id] = (state, parent_id)

    def add(self, certificate: CertificateDetail) -> None:
        self.certificates[certificate.serial] = certificate

    # ---- CertificateInventory -------------------------------------------------------------

    def page(self, where: CertificateFilter, after: Position | None, limit: int,
             now: datetime) -> list[CertificateSummary]:
        def wanted(c: CertificateDetail) -> bool:
            active = c.revoked_at is None and c.not_before <= now < c.not_after
            return ((not where.spiffe_id_prefix or c.spiffe_id.startswith(where.spiffe_id_prefix))
                    and (not where.namespace or c.namespace == where.namespace)
                    and (not where.service_account or c.service_account == where.service_account)
                    and (where.active is None or active == where.active)
                    and (not where.expiring_before or c.not_after < where.expiring_before)
                    and (not where.serial_prefix or c.serial.startswith(where.serial_prefix))
                    and (after is None or (c.issued_at, c.serial) > (after.issued_at, after.serial)))

        chosen = sorted((c for c in self.certificates.values() if wanted(c)),
                        key=lambda c: (c.issued_at.astimezone(UTC), c.serial))
        return [_summary(c) for c in chosen[:limit]]

    def get(self, serial: str) -> CertificateDetail:
        self.audit.check()
        if serial not in self.certificates:
            raise NotFound(serial)
        return self.certificates[serial]

    def usable(self, serial: str) -> bool:
        found = self.certificates.get(serial)
        if found is None or found.revoked_at is not None:
            return False
        state, parent = self.generations.get(found.issuer_generation_id, ("active", None))
        return state != "tainted" and (parent is None or
                                       self.generations.get(parent, ("", None))[0] != "tainted")

    def revoke(self, serial: str, reason: str, audit: AuditEntry) -> None:
        current = self.get(serial)
        if current.revoked_at is not None:
            raise Conflict(f"certificate {serial} is already revoked")
        self.certificates[serial] = dataclasses.replace(current, revoked_at=audit.at,
                                                        revocation_reason=reason)
        self.audit.append(audit)

    def revoked_by(self, issuer_generation_id: int, now: datetime) -> list[RevokedEntry]:
        return [RevokedEntry(c.serial, c.revoked_at, c.revocation_reason or "unspecified")
                for c in sorted(self.certificates.values(), key=lambda c: c.serial)
                if c.issuer_generation_id == issuer_generation_id and c.revoked_at is not None
                and c.not_after > now]

    # ---- IdentityBlocklist ----------------------------------------------------------------

    def block(self, spiffe_id: str, reason: str, audit: AuditEntry) -> None:
        self.audit.check()
        if spiffe_id in self.blocklist:
            raise Conflict(f"{spiffe_id} is already blocked")
        self.blocklist[spiffe_id] = BlockedIdentity(spiffe_id, reason, audit.actor, audit.at)
        self.audit.append(audit)

    def unblock(self, spiffe_id: str, audit: AuditEntry) -> None:
        self.audit.check()
        if self.blocklist.pop(spiffe_id, None) is None:
            raise NotFound(spiffe_id)
        self.audit.append(audit)

    def blocked(self) -> list[BlockedIdentity]:
        return [self.blocklist[k] for k in sorted(self.blocklist)]


def _summary(c: CertificateDetail) -> CertificateSummary:
    return CertificateSummary(**{f: getattr(c, f) for f in CertificateSummary.__dataclass_fields__})
