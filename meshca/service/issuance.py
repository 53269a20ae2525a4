"""Issue an X509-SVID to an authenticated workload: the CreateCertificate use case."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.x509 import random_serial_number

from meshca.core.authority import SigningAuthority, sign_leaf
from meshca.core.bundle import certificate_pem
from meshca.core.clock import Clock
from meshca.core.csr import check_csr
from meshca.core.lifetime import LifetimePolicy, leaf_validity
from meshca.core.sa_token import ServiceAccount
from meshca.core.spiffe import SpiffeId
from meshca.core.templates import leaf_svid
from meshca.errors import AuthenticationError, InvalidRequest
from meshca.service.authentication import bearer_token
from meshca.service.ports import CertificateLog, IssuedRecord, TokenAuthenticator

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


@dataclass(frozen=True, slots=True)
class IssuedChain:
    """Leaf, intermediates, and the whole bundle last: Istio's `cert_chain` layout."""

    cert_chain: tuple[str, ...]
    serial: str
    spiffe_id: SpiffeId


class IssuanceService:
    def __init__(
        self,
        *,
        trust_domain: str,
        authenticator: TokenAuthenticator,
        authority: Callable[[], SigningAuthority],
        lifetimes: LifetimePolicy,
        certificate_log: CertificateLog,
        clock: Clock,
    ) -> None:
        self._trust_domain = trust_domain
        self._authenticator = authenticator
        self._authority = authority
        self._lifetimes = lifetimes
        self._log = certificate_log
        self._clock = clock

    def authenticate(self, request: CertificateRequest) -> tuple[ServiceAccount, SpiffeId]:
        token = bearer_token(request.authorization)
        if request.cluster_id:
            raise AuthenticationError("unknown cluster id; no other clusters are configured")
        account = self._authenticator.authenticate(token)
        try:
            identity = SpiffeId.for_service_account(
                self._trust_domain, account.namespace, account.name
            )
        except ValueError:
            # A signed token, but its names cannot be SPIFFE path segments ("..", "a/b", " ").
            raise AuthenticationError(
                "token service account name or namespace cannot form a SPIFFE ID"
            ) from None
        return account, identity

    async def create_certificate(self, request: CertificateRequest) -> IssuedChain:
        account, identity = self.authenticate(request)
        _check_metadata(request.metadata)
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
        cert = sign_leaf(authority, builder, identity)
        leaf_pem = certificate_pem(cert)
        serial = f"{cert.serial_number:x}"
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
            )
        )
        return IssuedChain((leaf_pem, *authority.chain_pem, authority.bundle.pem), serial, identity)


def _check_metadata(metadata: Mapping[str, object]) -> None:
    if IMPERSONATED_IDENTITY in metadata:
        # Node agents asking for others arrive with a later issue; until then, fail closed.
        raise AuthenticationError("impersonation (ImpersonatedIdentity) is not permitted")
    # Other keys are ignored: newer agents may send hints this version does not know.
    signer = metadata.get(CERT_SIGNER)
    if signer not in (None, ""):
        raise InvalidRequest("CertSigner names a signer meshca does not have")
