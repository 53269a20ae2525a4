"""The ports the use cases need; infra/ provides the real ones, tests/fakes/ the fakes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from meshca.core.keys import SigningKey
from meshca.core.sa_token import ServiceAccount


@dataclass(frozen=True, slots=True)
class IssuedRecord:
    """What is kept of every certificate meshca hands out."""

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
    certificate_pem: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the append-only audit log. `detail` never holds secrets."""

    at: datetime
    actor: str
    action: str
    target: str
    outcome: str  # "ok" | "refused" | "failed"
    detail: str | None = None


class CertificateLog(Protocol):
    async def record(self, record: IssuedRecord, *, renewing_serial: str | None = None) -> None:
        """Commit the record, or raise; return only once it is durable.

        Checked in the same transaction: the identity is not blocked (PermissionDenied) and,
        for a renewal by client certificate, the presented certificate is on record and not
        revoked (AuthenticationError). CaUnavailable when the database cannot be written.
        """
        ...


class AuditSink(Protocol):
    def append(self, entry: AuditEntry) -> None:
        """Queue an audit entry; written with the next batch, never blocking the caller."""
        ...


class TokenAuthenticator(Protocol):
    def authenticate(self, token: str) -> ServiceAccount:
        """Raise AuthenticationError unless the token is acceptable."""
        ...


class KeyStore(Protocol):
    def put(self, name: str, key: SigningKey) -> str:
        """Store a private key; return its location (never the key itself)."""
        ...

    def load(self, location: str) -> SigningKey: ...
