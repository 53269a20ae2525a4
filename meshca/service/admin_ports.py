"""Ports of the admin use cases (service/admin/): what they read and write.

infra/db implements them (translating database errors into `StoreUnavailable`), tests/fakes/
fakes them. Every mutation takes the `AuditEntry` that records it and writes both in one
transaction, or neither. Results are frozen dataclasses, never rows or dicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from meshca.core.roles import Role
from meshca.service.ca_ports import StoredPolicy
from meshca.service.ports import AuditEntry

# ---- certificate inventory ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertificateFilter:
    spiffe_id_prefix: str | None = None
    namespace: str | None = None
    service_account: str | None = None
    active: bool | None = None  # unrevoked and within validity at `now`
    expiring_before: datetime | None = None
    serial_prefix: str | None = None  # lower-case hex, as stored: resolves a serial typed short


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended: the (issued_at, serial) of its last row, a total order."""

    issued_at: datetime
    serial: str


@dataclass(frozen=True, slots=True)
class CertificateSummary:
    """An issued certificate as admins list it (without the PEM)."""

    serial: str
    spiffe_id: str
    namespace: str
    service_account: str
    pod_name: str | None
    pod_uid: str | None
    not_before: datetime
    not_after: datetime
    issuer_generation_id: int
    fingerprint_sha256: str
    key_type: str
    issued_at: datetime
    revoked_at: datetime | None
    revocation_reason: str | None

    @property
    def position(self) -> Position:
        return Position(self.issued_at, self.serial)


@dataclass(frozen=True, slots=True)
class CertificateDetail(CertificateSummary):
    certificate_pem: str


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    """One entry of a CRL."""

    serial: str
    revoked_at: datetime
    reason: str


class CertificateInventory(Protocol):
    def page(self, where: CertificateFilter, after: Position | None, limit: int,
             now: datetime) -> list[CertificateSummary]:
        """Up to `limit` certificates after `after`, in (issued_at, serial) order."""
        ...

    def get(self, serial: str) -> CertificateDetail:
        """NotFound unless a certificate has this serial."""
        ...

    def usable(self, serial: str) -> bool:
        """On record, not revoked, not under a tainted key (validity itself is checked by TLS)."""
        ...

    def revoke(self, serial: str, reason: str, audit: AuditEntry) -> None:
        """Revoked at `audit.at`; NotFound, or Conflict if it already is."""
        ...

    def revoked_by(self, issuer_generation_id: int, now: datetime) -> list[RevokedEntry]:
        """Revoked and not yet expired certificates of one issuer, by serial: a CRL's entries."""
        ...


# ---- identities -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockedIdentity:
    spiffe_id: str
    reason: str
    blocked_by: str
    blocked_at: datetime


class IdentityBlocklist(Protocol):
    def block(self, spiffe_id: str, reason: str, audit: AuditEntry) -> None:
        """Blocked by `audit.actor` at `audit.at`; Conflict if it already is."""
        ...

    def unblock(self, spiffe_id: str, audit: AuditEntry) -> None:
        """NotFound unless it is blocked."""
        ...

    def blocked(self) -> list[BlockedIdentity]:
        """By SPIFFE ID."""
        ...


# ---- admin tokens ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdminToken:
    """A token's record (only a digest of the token itself is ever stored)."""

    name: str
    role: Role
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


class AdminTokenStore(Protocol):
    def create(self, name: str, role: Role, token: str, audit: AuditEntry) -> None:
        """Created by `audit.actor` at `audit.at`; Conflict if the name is taken."""
        ...

    def revoke(self, name: str, audit: AuditEntry) -> None:
        """NotFound unless a live token has this name; Conflict if it is the last live admin
        token (revoking it would lock administrators out)."""
        ...

    def role_for(self, token: str) -> tuple[str, Role] | None:
        """(name, role) of a live token, or None."""
        ...

    def all(self) -> list[AdminToken]:
        """Live and revoked, by name."""
        ...

    def live_admin_exists(self) -> bool: ...


# ---- audit log ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int  # grows with every entry: the audit log's cursor
    entry: AuditEntry


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Each set field narrows the search to entries whose field contains it (case-sensitive,
    taken literally: '%' and '_' are no wildcards)."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None


class AuditLog(Protocol):
    def append(self, entry: AuditEntry) -> None:
        """An entry with no mutation to share a transaction with, written in its own."""
        ...

    def page(self, after_id: int, limit: int) -> list[AuditRecord]:
        """Up to `limit` entries with an id above `after_id`, oldest first."""
        ...

    def search(self, where: AuditFilter, cursor: int | None, newest_first: bool,
               limit: int) -> list[AuditRecord]:
        """Up to `limit` entries matching `where`: newest first (ids below `cursor`, when
        given) or oldest first (ids above it). StoreUnavailable when the store is down."""
        ...


# ---- authorization policies stored through the API ------------------------------------------


class StoredPolicies(Protocol):
    def all(self) -> tuple[int, list[StoredPolicy]]:
        """The set version and every policy, read together."""
        ...

    def put(self, namespace: str, name: str, document: dict[str, Any], audit: AuditEntry,
            ) -> tuple[StoredPolicy, bool]:
        """Create or replace; the row, and whether it was created. Bumps the set version."""
        ...

    def delete(self, namespace: str, name: str, audit: AuditEntry) -> int:
        """The new set version; NotFound unless the policy is stored."""
        ...


# ---- CA generations, as the admin API shows them --------------------------------------------


class GenerationRecord(Protocol):
    """A CA generation's journal row (read-only)."""

    @property
    def id(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def parent_id(self) -> int | None: ...
    @property
    def subject(self) -> str: ...
    @property
    def serial(self) -> str: ...
    @property
    def key_type(self) -> str: ...
    @property
    def key_location(self) -> str: ...
    @property
    def not_before(self) -> datetime: ...
    @property
    def not_after(self) -> datetime: ...
    @property
    def state(self) -> str: ...
    @property
    def certificate_pem(self) -> str: ...


class CaGenerations(Protocol):
    def all(self) -> Sequence[GenerationRecord]:
        """Every generation, oldest first."""
        ...

    def bundle_sequence(self) -> int:
        """`spiffe_sequence`: grows on every change of the published roots."""
        ...


# ---- health ---------------------------------------------------------------------------------


class StoreProbe(Protocol):
    def ping(self) -> None:
        """Return once the database answered a trivial query; StoreUnavailable otherwise."""
        ...


# ---- issuance counters, as the console's live chart reads them -------------------------------


@dataclass(frozen=True, slots=True)
class IssuanceCounts:
    """This process's running totals since it started (every worker summed)."""

    received: float  # CreateCertificate requests
    issued: float
    failures: dict[str, float]  # requests that ended without a certificate, by gRPC error
    refusals: dict[str, float]  # callers refused at authentication, by reason


class IssuanceCounters(Protocol):
    def read(self) -> IssuanceCounts:
        """The totals now; never raises for a missing family (it counts as zero)."""
        ...
