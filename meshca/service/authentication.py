"""Who is calling: bearer-token extraction and local verification of Kubernetes tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from meshca.core.bearer import bearer_token as core_bearer_token
from meshca.core.certificates import format_serial, spiffe_id_of, valid_at
from meshca.core.kube_names import check_service_account_ref
from meshca.core.sa_token import ServiceAccount
from meshca.core.spiffe import SpiffeId
from meshca.errors import AuthenticationError


def bearer_token(values: Sequence[str]) -> str:
    """Exactly one `authorization` value, `Bearer <token>`, as Istio's agent sends it."""
    return core_bearer_token(values, exact_scheme=True)


@dataclass(frozen=True, slots=True)
class CertificateCaller:
    """A caller that proved itself with a meshca certificate over mutual TLS."""

    account: ServiceAccount
    spiffe_id: SpiffeId
    serial: str


def caller_from_certificate(der: bytes, trust_domain: str, now: datetime) -> CertificateCaller:
    """The TLS layer verified the chain; here the certificate must name a workload of ours.

    Whether it is on record and unrevoked is checked when the new certificate is committed.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        cert = None
    spiffe_id = spiffe_id_of(cert) if cert is not None else None
    if cert is None or spiffe_id is None:
        raise AuthenticationError("client certificate does not carry exactly one SPIFFE ID",
                                  reason="certificate")
    if not valid_at(cert, now):
        raise AuthenticationError("client certificate is not valid now", reason="certificate")
    parts = spiffe_id.workload_parts() if spiffe_id.trust_domain == trust_domain else None
    if parts is None:
        raise AuthenticationError("client certificate is not a workload identity of this trust domain",
                                  reason="certificate")
    try:
        check_service_account_ref(*parts)
    except ValueError as exc:  # issued before names were checked: a token must speak again
        raise AuthenticationError(f"client certificate names no Kubernetes service account "
                                  f"({exc}); authenticate with a token",
                                  reason="certificate") from None
    account = ServiceAccount(namespace=parts[0], name=parts[1])
    return CertificateCaller(account, spiffe_id, format_serial(cert.serial_number))
