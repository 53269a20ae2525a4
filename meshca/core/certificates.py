"""What meshca reads off a certificate: its SPIFFE ID, its serial's text form, and whether it
is still good. Each rule is written here once; the database filters mirror `standing`."""

from __future__ import annotations

import enum
from datetime import datetime

from cryptography import x509

from meshca.core.spiffe import SpiffeId

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def format_serial(serial: int) -> str:
    """Lower-case hex without leading zeros: how serials are stored, listed and compared."""
    return f"{serial:x}"


def parse_serial(text: str) -> int:
    """ValueError unless `text` is a serial in hex digits (either case), as stored."""
    if not text or not set(text) <= _HEX_DIGITS:
        raise ValueError(f"{text[:80]!r} is not a certificate serial (hex digits)")
    return int(text, 16)


def spiffe_id_of(cert: x509.Certificate) -> SpiffeId | None:
    """The certificate's SPIFFE ID: its one URI SAN, valid per the SPIFFE spec; else None."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        return SpiffeId.parse(uris[0]) if len(uris) == 1 else None
    except (ValueError, x509.ExtensionNotFound):
        return None


class Standing(enum.Enum):
    GOOD = "active"
    REVOKED = "revoked"
    ISSUER_TAINTED = "issued under a CA key marked compromised"
    NOT_YET_VALID = "not yet valid"
    EXPIRED = "expired"


def standing(*, not_before: datetime, not_after: datetime, now: datetime,
             revoked: bool = False, issuer_tainted: bool = False) -> Standing:
    """Whether a certificate may still prove its identity at `now`, or the first reason not.

    A revocation or a compromised issuer outranks time. The validity period runs from
    notBefore through notAfter, both included (RFC 5280, 4.1.2.5).
    """
    if revoked:
        return Standing.REVOKED
    if issuer_tainted:
        return Standing.ISSUER_TAINTED
    if now < not_before:
        return Standing.NOT_YET_VALID
    if now > not_after:
        return Standing.EXPIRED
    return Standing.GOOD


def valid_at(cert: x509.Certificate, now: datetime) -> bool:
    """Within its validity period at `now` (revocation is the caller's other question)."""
    return standing(not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                    now=now) is Standing.GOOD
