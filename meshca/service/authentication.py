"""Who is calling: bearer-token extraction and local verification of Kubernetes tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from meshca.core.kube_names import check_service_account_ref
from meshca.core.sa_token import ServiceAccount
from meshca.core.spiffe import SpiffeId
from meshca.errors import AuthenticationError

_BEARER = "Bearer "


def bearer_token(values: Sequence[str]) -> str:
    """Exactly one `authorization` value, `Bearer <token>`, as Istio's agent sends it."""
    if not values:
        raise AuthenticationError("no authorization metadata; expected 'Bearer <token>'",
                                  reason="missing")
    if len(values) > 1:
        raise AuthenticationError("more than one authorization value", reason="malformed")
    value = values[0]
    if not value.startswith(_BEARER):
        raise AuthenticationError("authorization metadata must start with 'Bearer '",
                                  reason="malformed")
    token = value[len(_BEARER):].strip()
    if not token:
        raise AuthenticationError("authorization metadata carries an empty bearer token",
                                  reason="missing")
    return token


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
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        spiffe_id = SpiffeId.parse(uris[0]) if len(uris) == 1 else None
    except (ValueError, x509.ExtensionNotFound):
        spiffe_id = None
    if spiffe_id is None:
        raise AuthenticationError("client certificate does not carry exactly one SPIFFE ID",
                                  reason="certificate")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise AuthenticationError("client certificate is not valid now", reason="certificate")
    segments = spiffe_id.path.split("/")
    if spiffe_id.trust_domain != trust_domain or len(segments) != 5 \
            or segments[1] != "ns" or segments[3] != "sa":
        raise AuthenticationError("client certificate is not a workload identity of this trust domain",
                                  reason="certificate")
    try:
        check_service_account_ref(segments[2], segments[4])
    except ValueError as exc:  # issued before names were checked: a token must speak again
        raise AuthenticationError(f"client certificate names no Kubernetes service account "
                                  f"({exc}); authenticate with a token",
                                  reason="certificate") from None
    account = ServiceAccount(namespace=segments[2], name=segments[4])
    return CertificateCaller(account, spiffe_id, f"{cert.serial_number:x}")
