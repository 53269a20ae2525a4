"""Issue an X509-SVID to an authenticated workload: the CreateCertificate use case."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.x509 import random_serial_number

from meshca.core.authority import SigningAuthority, sign_leaf
from meshca.core.bundle import certificate_pem
from meshca.core.certificates import format_serial
from meshca.core.clock import Clock
from meshca.core.csr import check_csr
from meshca.core.kube_names import check_service_account_ref
from meshca.core.lifetime import LifetimePolicy, leaf_validity
from meshca.core.remote_signing import SignerUnavailable
from meshca.core.sa_token import ServiceAccount
from meshca.core.spiffe import SpiffeId
from meshca.core.templates import leaf_svid
from meshca.errors import (
    AuthenticationError,
    CaUnavailable,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
)
from meshca.service.authentication import bearer_token, caller_from_certificate
from meshca.service.ports import (
    AuditEntry,
    AuditSink,
    CertificateLog,
    IssuedRecord,
    WorkloadTokens,
)
from meshca.service.rate_limits import IssuanceRateLimits
from meshca.service.refusal_summary import RefusalSummary, source_address

IMPERSONATED_IDENTITY = "ImpersonatedIdentity"
CERT_SIGNER = "CertSigner"


@dataclass(frozen=True, slots=True)
class CertificateRequest:
    """CreateCertificate as the service sees it, free of protobuf and gRPC types."""

    csr_pem: str
    validity_seconds: int
    metadata: Mapping[str, object]
    authorization: Sequence[str]
    cluster_id: str | None = None
    # DER of a client certificate the TLS layer verified against the bundle, if one was shown.
    peer_certificate: bytes | None = None
    peer: str = ""


@dataclass(frozen=True, slots=True)
class Caller:
    account: ServiceAccount
    spiffe_id: SpiffeId
    renewing_serial: str | None = None


@dataclass(frozen=True, slots=True)
class IssuedChain:
    """Leaf, intermediates, and the whole bundle last: Istio's `cert_chain` layout."""

    cert_chain: tuple[str, ...]
    serial: str
    spiffe_id: SpiffeId
    not_after: datetime | None = None  # the leaf's, for the issuance log line


class IssuanceService:
    def __init__(
        self,
        *,
        trust_domain: str,
        workloads: WorkloadTokens,
        authority: Callable[[], SigningAuthority],
        lifetimes: LifetimePolicy,
        certificate_log: CertificateLog,
        audit: AuditSink,
        clock: Clock,
        refusals: RefusalSummary | None = None,
        rate_limits: IssuanceRateLimits | None = None,
        max_renewal_age: timedelta = timedelta(days=7),
        federated_roots: Callable[[], str] | None = None,
    ) -> None:
        """`refusals` summarises refused callers for the audit log (a new one when None);
        renewal by certificate needs a token check of the identity within `max_renewal_age`.
        `federated_roots` (--istio-include-federated): PEM appended to the bundle element, as
        Istio's multi-trust-domain set-up expects; the local roots always come first."""
        self._trust_domain = trust_domain
        self._workloads = workloads
        self._authority = authority
        self._lifetimes = lifetimes
        self._log = certificate_log
        self._audit = audit
        self._clock = clock
        self.refusals = refusals or RefusalSummary()
        self._rate_limits = rate_limits or IssuanceRateLimits(None, None)
        self._max_renewal_age = max_renewal_age
        self._federated_roots = federated_roots

    async def authenticate(self, request: CertificateRequest, *,
                           action: str = "CreateCertificate") -> Caller:
        """A bearer token when one is sent; otherwise a verified client certificate (renewal).

        A trusted node agent may name another workload in `ImpersonatedIdentity`; each
        impersonation is audited as `<action>.impersonate`.
        """
        impersonated = request.metadata.get(IMPERSONATED_IDENTITY)
        if not request.authorization and request.peer_certificate is not None:
            if impersonated is not None:
                raise AuthenticationError("impersonation needs a node agent's token",
                                          reason="impersonation")
            if request.cluster_id:
                raise AuthenticationError("clusterid applies to tokens only", reason="cluster")
            by_cert = caller_from_certificate(
                request.peer_certificate, self._trust_domain, self._clock.now()
            )
            return Caller(by_cert.account, by_cert.spiffe_id, by_cert.serial)
        token = bearer_token(request.authorization)
        account = await self._workloads.authenticate(token, request.cluster_id)
        identity = self._spiffe_id(account.namespace, account.name)
        if impersonated is None:
            return Caller(account, identity)
        namespace, name = self._impersonation_target(impersonated)
        target = await self._workloads.impersonate(account, request.cluster_id, namespace, name)
        target_id = self._spiffe_id(namespace, name)
        self._audit.append(AuditEntry(
            at=self._clock.now(), actor=identity.uri, action=f"{action}.impersonate",
            target=target_id.uri, outcome="ok", detail=f"node {account.node_name or '(unbound)'}",
        ))
        return Caller(target, target_id)

    def _spiffe_id(self, namespace: str, name: str) -> SpiffeId:
        try:
            return _workload_id(self._trust_domain, namespace, name)
        except ValueError as exc:
            # A signed token, but its names are no Kubernetes names ("..", "a/b", " ", 3,000
            # characters) or cannot be SPIFFE path segments.
            raise AuthenticationError(
                f"token service account name or namespace cannot form a SPIFFE ID: {exc}",
                reason="subject") from None

    def _impersonation_target(self, value: object) -> tuple[str, str]:
        """`ImpersonatedIdentity` must be a workload SPIFFE ID of this trust domain."""
        try:
            target = SpiffeId.parse(value) if isinstance(value, str) else None
        except ValueError:
            target = None
        parts = target.workload_parts() if target and target.trust_domain == self._trust_domain \
            else None
        if parts is None:
            raise AuthenticationError("ImpersonatedIdentity is not a workload SPIFFE ID of this "
                                      "trust domain", reason="impersonation")
        try:
            check_service_account_ref(*parts)
        except ValueError as exc:
            raise AuthenticationError(f"ImpersonatedIdentity names no Kubernetes service "
                                      f"account: {exc}", reason="impersonation") from None
        return parts

    async def create_certificate(self, request: CertificateRequest) -> IssuedChain:
        caller: Caller | None = None
        source = source_address(request.peer)
        try:
            self._rate_limits.check_source(source)  # before any token is looked at
            caller = await self.authenticate(request)
            self._rate_limits.check_identity(caller.spiffe_id.uri)
            return await self._issue(request, caller)
        except (AuthenticationError, PermissionDenied, RateLimited) as exc:
            self.refusals.add(self._clock.now(), source=f"grpc:{source}",
                              action="CreateCertificate",
                              target=caller.spiffe_id.uri if caller else "",
                              reason=_refusal_reason(exc), code=_refusal_code(exc))
            raise

    async def _issue(self, request: CertificateRequest, caller: Caller) -> IssuedChain:
        _check_signer(request.metadata)
        account, identity = caller.account, caller.spiffe_id
        checked = check_csr(request.csr_pem, identity)
        authority = self._authority()
        now = self._clock.now()
        validity = leaf_validity(
            request.validity_seconds, self._lifetimes, now, authority.not_after
        )
        builder = leaf_svid(
            public_key=checked.public_key,
            spiffe_id=identity,
            issuer=authority.certificate,
            serial=random_serial_number(),
            not_before=validity.not_before,
            not_after=validity.not_after,
        )
        try:
            if authority.is_remote:  # a network call (Vault Transit): off the event loop
                cert = await asyncio.to_thread(sign_leaf, authority, builder, identity)
            else:
                cert = sign_leaf(authority, builder, identity)
        except SignerUnavailable as exc:
            raise CaUnavailable("the signing key's service (Vault) is unavailable") from exc
        leaf_pem = certificate_pem(cert)
        serial = format_serial(cert.serial_number)
        await self._log.record(
            IssuedRecord(
                serial=serial,
                spiffe_id=identity.uri,
                namespace=account.namespace,
                service_account=account.name,
                pod_name=account.pod_name,
                pod_uid=account.pod_uid,
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                issuer_generation_id=authority.generation_id,
                fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
                key_type=checked.key_description,
                issued_at=now,
                certificate_pem=leaf_pem,
                token_checked_at=None if caller.renewing_serial else now,
            ),
            renewing_serial=caller.renewing_serial,
            token_checked_since=now - self._max_renewal_age if caller.renewing_serial else None,
        )
        bundle = authority.bundle.pem
        if self._federated_roots is not None:
            bundle += self._federated_roots()
        return IssuedChain((leaf_pem, *authority.chain_pem, bundle), serial, identity,
                           validity.not_after)


@functools.lru_cache(maxsize=4096)
def _workload_id(trust_domain: str, namespace: str, name: str) -> SpiffeId:
    """Checked once per identity: the name checks are pure and were a tenth of a cached
    token's issuance. Refusals raise, and are not cached."""
    check_service_account_ref(namespace, name)
    return SpiffeId.for_service_account(trust_domain, namespace, name)


def _refusal_reason(exc: Exception) -> str:
    # The message of a rate-limit refusal says how long to wait: it would make every refusal
    # a key of its own in the summary.
    if isinstance(exc, RateLimited):
        return f"over the per-{exc.limit} issuance rate limit"
    return str(exc)


def _refusal_code(exc: Exception) -> str:
    if isinstance(exc, AuthenticationError):
        return exc.reason
    return "rate_limited" if isinstance(exc, RateLimited) else "blocked"


def _check_signer(metadata: Mapping[str, object]) -> None:
    # Other keys are ignored: newer agents may send hints this version does not know.
    signer = metadata.get(CERT_SIGNER)
    if signer not in (None, ""):
        raise InvalidRequest("CertSigner names a signer meshca does not have")
