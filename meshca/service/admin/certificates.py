"""Issued certificates: the inventory, revocation, and each intermediate's CRL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

from meshca.core.authority import SigningAuthority
from meshca.core.certificates import parse_serial
from meshca.core.clock import Clock
from meshca.core.crl import Revocation, RevocationReason, build_crl
from meshca.core.remote_signing import Signer
from meshca.errors import NotFound
from meshca.service.admin.audit import audit_entry
from meshca.service.admin_ports import (
    CaGenerations,
    CertificateDetail,
    CertificateFilter,
    CertificateInventory,
    CertificateSummary,
    Position,
)


@dataclass(frozen=True, slots=True)
class CertificatePage:
    items: tuple[CertificateSummary, ...]
    next_after: Position | None  # where the next page starts; None at the end


class CertificateAdmin:
    def __init__(self, inventory: CertificateInventory, generations: CaGenerations,
                 signer: Callable[[str], Signer],
                 authority: Callable[[], SigningAuthority | None], clock: Clock) -> None:
        """`signer` gives the signer of a generation's key location (for its CRL);
        `authority` the CA this process signs with now, if loaded."""
        self._inventory = inventory
        self._generations = generations
        self._signer = signer
        self._authority = authority
        self._clock = clock

    def page(self, where: CertificateFilter, after: Position | None, limit: int,
             ) -> CertificatePage:
        """In issue order (stable): a page never skips or repeats a certificate."""
        rows = self._inventory.page(where, after, limit + 1, self._clock.now())
        page, more = rows[:limit], len(rows) > limit
        return CertificatePage(tuple(page), page[-1].position if more else None)

    def get(self, serial: str) -> CertificateDetail:
        return self._inventory.get(serial)

    def revoke(self, serial: str, reason: RevocationReason, actor: str) -> CertificateDetail:
        """The certificate as revoked; NotFound, or Conflict if it already was."""
        self._inventory.revoke(serial, reason.value, audit_entry(
            self._clock, actor, "certificate.revoke", serial, detail=reason.value))
        return self._inventory.get(serial)

    def crl(self, issuer: int | None) -> x509.CertificateRevocationList:
        """The CRL of intermediate generation `issuer` (default: the one signing now), signed
        by it; NotFound when there is no such intermediate."""
        authority = self._authority()
        wanted = issuer or (authority.generation_id if authority else -1)
        generation = next((g for g in self._generations.all() if g.id == wanted), None)
        if generation is None or generation.kind != "intermediate":
            raise NotFound(f"intermediate CA generation {issuer}")
        now = self._clock.now()
        entries = [Revocation(parse_serial(e.serial), e.revoked_at, RevocationReason(e.reason))
                   for e in self._inventory.revoked_by(generation.id, now)]
        certificate = x509.load_pem_x509_certificate(generation.certificate_pem.encode())
        return build_crl(certificate, self._signer(generation.key_location), entries, now)
