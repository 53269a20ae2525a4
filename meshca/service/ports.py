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


class CertificateLog(Protocol):
    async def record(self, record: IssuedRecord) -> None:
        """Return only once the record is durably committed; raise CaUnavailable otherwise."""
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
