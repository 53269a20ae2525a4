"""The ports the use cases need; infra/ provides the real ones, tests/fakes/ the fakes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from meshca.core.keys import SigningKey
from meshca.core.sa_token import ServiceAccount
from meshca.errors import DependencyError


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
    # When the identity last showed a service-account token: now for a token, inherited from
    # the presented certificate's record for a renewal by certificate (None until committed).
    token_checked_at: datetime | None = None


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
    async def record(self, record: IssuedRecord, *, renewing_serial: str | None = None,
                     token_checked_since: datetime | None = None) -> None:
        """Commit the record, or raise; return only once it is durable.

        Checked in the same transaction: the identity is not blocked (PermissionDenied) and,
        for a renewal by client certificate, the presented certificate is on record and not
        revoked, and its lineage's last token check is not before `token_checked_since`
        (AuthenticationError); the new record inherits that time. CaUnavailable when the
        database cannot be written.
        """
        ...


class BlockedIdentities(Protocol):
    async def is_blocked(self, spiffe_id: str) -> bool:
        """Whether an administrator blocked this identity (a read; StoreUnavailable when the
        database cannot answer)."""
        ...


class AuditSink(Protocol):
    def append(self, entry: AuditEntry) -> None:
        """Queue an audit entry; written with the next batch, never blocking the caller."""
        ...


class TokenAuthenticator(Protocol):
    async def authenticate(self, token: str) -> ServiceAccount:
        """Raise AuthenticationError unless the token is acceptable."""
        ...


class WorkloadTokens(Protocol):
    async def authenticate(self, token: str, cluster_id: str | None) -> ServiceAccount:
        """The workload behind a sidecar's token in the named cluster (None: the local one)."""
        ...

    async def impersonate(self, caller: ServiceAccount, cluster_id: str | None,
                          namespace: str, name: str) -> ServiceAccount:
        """The workload a node agent asks for, if it may; AuthenticationError otherwise."""
        ...


class KeyStore(Protocol):
    def put(self, name: str, key: SigningKey) -> str:
        """Store a private key; return its location (never the key itself)."""
        ...

    def load(self, location: str) -> SigningKey: ...


class KubeApiError(DependencyError):
    """A Kubernetes API server could not be asked, or refused to answer."""

    def __init__(self, message: str, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class TokenReviewResult:
    authenticated: bool
    username: str
    groups: tuple[str, ...]
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict)
    audiences: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True, slots=True)
class PodInfo:
    name: str
    namespace: str
    uid: str
    service_account: str
    node_name: str


class KubeApiPort(Protocol):
    """One cluster's API server. Calls block; callers run them in a thread pool."""

    cluster: str

    def token_review(self, token: str, audiences: list[str]) -> TokenReviewResult: ...

    def pod(self, namespace: str, name: str) -> PodInfo | None: ...

    def pods_on_node(self, namespace: str, node: str) -> list[PodInfo]: ...

    def get_json(self, path: str) -> dict[str, Any]: ...


class AuthMetrics(Protocol):
    """What token authentication reports; the transport layer exports it."""

    def token_cache(self, outcome: str) -> None:
        """outcome: "hit", "miss", "negative_hit" or "coalesced"."""
        ...

    def kube_call(self, kind: str, seconds: float, ok: bool) -> None:
        """kind: "tokenreview", "pod", "pods" or "discovery"."""
        ...


class NoAuthMetrics:
    def token_cache(self, outcome: str) -> None:
        pass

    def kube_call(self, kind: str, seconds: float, ok: bool) -> None:
        pass
