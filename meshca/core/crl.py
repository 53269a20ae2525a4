"""Certificate revocation lists, signed by the CA that issued the revoked certificates."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from meshca.core.remote_signing import Signer, sign_crl


class RevocationReason(enum.StrEnum):
    """RFC 5280 reason codes an operator may give (certificateHold is not offered: no unrevoke)."""

    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "keyCompromise"
    CA_COMPROMISE = "cACompromise"
    AFFILIATION_CHANGED = "affiliationChanged"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessationOfOperation"
    PRIVILEGE_WITHDRAWN = "privilegeWithdrawn"

    @property
    def x509_flag(self) -> x509.ReasonFlags:
        return {
            "unspecified": x509.ReasonFlags.unspecified,
            "keyCompromise": x509.ReasonFlags.key_compromise,
            "cACompromise": x509.ReasonFlags.ca_compromise,
            "affiliationChanged": x509.ReasonFlags.affiliation_changed,
            "superseded": x509.ReasonFlags.superseded,
            "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
            "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
        }[self.value]


@dataclass(frozen=True, slots=True)
class Revocation:
    serial: int
    revoked_at: datetime
    reason: RevocationReason


CRL_VALIDITY = timedelta(hours=1)


def build_crl(issuer: x509.Certificate, signer: Signer, revoked: Iterable[Revocation],
              now: datetime) -> x509.CertificateRevocationList:
    """A CRL valid for an hour; its number is the issue time in seconds, so it only grows."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now)
        .next_update(now + CRL_VALIDITY)
        .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value),
            critical=False,
        )
    )
    for entry in revoked:
        item = x509.RevokedCertificateBuilder().serial_number(entry.serial) \
            .revocation_date(entry.revoked_at)
        if entry.reason is not RevocationReason.UNSPECIFIED:
            item = item.add_extension(x509.CRLReason(entry.reason.x509_flag), critical=False)
        builder = builder.add_revoked_certificate(item.build())
    return sign_crl(builder, signer)
