"""What the rest of the server needs from federation: the verified bundles of the trust
domains this one federates with, as an in-memory snapshot (refreshed in the background by the
federation package, read without I/O on any request path)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from cryptography import x509

from meshca.core.federation import Relationship
from meshca.errors import Unavailable
from meshca.service.ca_ports import Lease
from meshca.service.ports import AuditEntry


@dataclass(frozen=True, slots=True)
class FederatedBundle:
    trust_domain: str  # "b.test"; never this server's own
    document: bytes  # the SPIFFE bundle JSON as fetched and verified
    x509_roots: tuple[x509.Certificate, ...]
    # jwt-svid keys by kid, each the JWK as the foreign bundle gave it (kty, crv/x/y or n/e...)
    jwt_keys: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    sequence: int | None = None
    fetched_at: datetime | None = None


class FederatedBundles(Protocol):
    def snapshot(self) -> Mapping[str, FederatedBundle]:
        """The last good bundle of every federated trust domain, by name. Never blocks."""
        ...


class NoFederation:
    """No federated trust domains (the default)."""

    def snapshot(self) -> Mapping[str, FederatedBundle]:
        return {}


# ---- the federation package's own ports ------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FederationRecord:
    """One stored relationship, with the last good bundle of its trust domain and how the
    fetching goes."""

    relationship: Relationship
    document: bytes | None = None  # the last good bundle, as fetched
    sequence: int | None = None
    fetched_at: datetime | None = None  # last good fetch
    changed_at: datetime | None = None  # when the stored bundle last changed
    attempted_at: datetime | None = None
    outcome: str | None = None  # of the last attempt: "ok" or a failure code
    error: str | None = None  # of the last attempt, when it failed
    next_fetch_at: datetime | None = None  # None: as soon as possible


class FederationStore(Protocol):
    """Relationships and their bundles, shared by every replica. Writes that come from the
    fetching replica carry its lease and raise LostLease once another holds it; writes from the
    admin API carry their audit entry, written in the same transaction. StoreUnavailable when
    the database cannot be reached."""

    def all(self) -> list[FederationRecord]: ...

    def get(self, trust_domain: str) -> FederationRecord:
        """NotFound unless stored."""
        ...

    def put(self, relationship: Relationship, audit: AuditEntry, *, create_only: bool = False,
            ) -> bool:
        """Create or replace the relationship (its bundle is kept; the next fetch is due at
        once); True when created. With `create_only`, Conflict if it exists."""
        ...

    def delete(self, trust_domain: str, audit: AuditEntry) -> None:
        """The relationship and its bundle; NotFound unless stored."""
        ...

    def record_fetch(self, lease: Lease, trust_domain: str, result: FetchResult) -> None:
        """The outcome of one fetch. A good one replaces the bundle (`document` set); a failed
        one keeps it. Nothing happens if the relationship was deleted meanwhile."""
        ...


@dataclass(frozen=True, slots=True)
class FetchResult:
    at: datetime
    outcome: str
    next_fetch_at: datetime
    error: str | None = None
    document: bytes | None = None  # set on success only
    sequence: int | None = None
    changed: bool = False  # the bundle differs from the one stored


@dataclass(frozen=True, slots=True)
class FetchRequest:
    url: str
    profile: str
    # PEM roots the endpoint's certificate must chain to; None: the system's CAs (https_web).
    trust_pem: str | None
    endpoint_spiffe_id: str | None  # https_spiffe: the URI SAN the endpoint must show
    timeout_seconds: float
    max_bytes: int


class FetchFailed(Unavailable):
    """A bundle endpoint could not be read. `outcome`: unreachable, timeout, tls, http_status,
    too_large."""

    def __init__(self, message: str, outcome: str) -> None:
        super().__init__(message)
        self.outcome = outcome


class BundleFetcher(Protocol):
    def fetch(self, request: FetchRequest) -> bytes:
        """Blocking: the body of `GET url`, authenticated per the profile; FetchFailed."""
        ...
