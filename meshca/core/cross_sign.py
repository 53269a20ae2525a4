"""Cross-signed root rotation (`--root-rotation cross-sign`): the old root vouches for the new.

When a new root is made while another is active, the active root also signs a cross
certificate: the new root's subject, key and subject key identifier, issued by the old root.
Intermediates under the new root are then served with the cross certificate above them, so
one chain verifies for a peer holding only the old root (leaf, intermediate, cross, old root)
and for one holding the new root (leaf, intermediate, new root): a peer that has not picked
up the new bundle keeps working until the old root expires.

The old root must allow the extra CA below it: with its pathLenConstraint a chain under it
may hold the cross certificate and the intermediate, two CAs. Roots made in this mode carry
`ROOT_PATH_LENGTH` (2); a root from before has 1, and its successor is not cross-signed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from meshca.core.spiffe import SpiffeId
from meshca.core.templates import ca_certificate

ROOT_PATH_LENGTH = 2  # a root in cross-sign mode: the cross certificate and an intermediate
CROSS_PATH_LENGTH = 1  # like the new root, one CA (the intermediate) below it


def can_cross_sign(old_root: x509.Certificate) -> bool:
    """Whether a chain cross certificate -> intermediate fits under `old_root`'s path length."""
    try:
        constraints = old_root.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca and (constraints.path_length is None or constraints.path_length >= 2)


def cross_certificate(new_root: x509.Certificate, old_root: x509.Certificate, *,
                      trust_domain: SpiffeId, serial: int, now: datetime,
                      backdate: timedelta) -> x509.CertificateBuilder:
    """The certificate for `new_root`'s key and name that `old_root` signs. It ends when either
    root does, and carries the new root's key identifier, so that the new root's
    intermediates (whose authority key identifier names it) chain to it."""
    if not can_cross_sign(old_root):
        raise ValueError("the old root's path length leaves no room for a cross certificate")
    not_before = max(now - backdate, old_root.not_valid_before_utc, new_root.not_valid_before_utc)
    not_after = min(old_root.not_valid_after_utc, new_root.not_valid_after_utc)
    if not_after <= not_before:
        raise ValueError("the two roots are not valid at the same time")
    return ca_certificate(public_key=new_root.public_key(), subject=new_root.subject,
                          trust_domain=trust_domain, issuer=old_root, serial=serial,
                          not_before=not_before, not_after=not_after,
                          path_length=CROSS_PATH_LENGTH)


def served_cross_certificates(stored: Iterable[x509.Certificate], issuers: Iterable[x509.Certificate],
                              now: datetime | None = None) -> tuple[x509.Certificate, ...]:
    """The cross certificates kept with a root that go in the served chain: those signed by
    one of `issuers` (the roots not tainted: whether meshca still publishes the old root does
    not matter to a peer that holds only it) and, given `now`, not expired."""
    roots = list(issuers)
    served: list[x509.Certificate] = []
    for cross in stored:
        if now is not None and now >= cross.not_valid_after_utc:
            continue
        for root in roots:
            if root.subject != cross.issuer:
                continue
            try:
                cross.verify_directly_issued_by(root)
            except (ValueError, TypeError, InvalidSignature):
                continue
            served.append(cross)
            break
    return tuple(served)
