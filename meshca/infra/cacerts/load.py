"""Loading a plugged-in CA: read the four files, parse them, verify them, note what is ageing.

Near expiry (< 30 days by default, for any certificate on the path) is returned in
`expires_soon` and `warnings`; roots that have expired stay in the bundle but are warned about
(the operator may still be rotating). This package logs nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509

from meshca.infra.cacerts import files, pem
from meshca.infra.cacerts.layout import CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT
from meshca.infra.cacerts.verify import (
    check_key_matches,
    check_signing_certificate,
    dedupe_roots,
    describe,
    name,
    verify_chain,
)
from meshca.service.ca_ports import PluggedCa

EXPIRY_WARNING = timedelta(days=30)


def load_plugged_ca(
    directory: Path, now: datetime, *, expiry_warning: timedelta = EXPIRY_WARNING
) -> PluggedCa:
    """Read and verify Istio's cacerts layout in `directory`; raise PluggedCaError if unusable.

    Raises PluggedCaMissing (a PluggedCaError) when none of the four files exist.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    contents = files.read_stable(directory)
    warnings = files.permission_warnings(directory)

    signing = pem.certificates(contents[CA_CERT], CA_CERT)
    certificate = signing[0]
    if len(signing) > 1:
        warnings.append(
            f"{CA_CERT} holds {len(signing)} certificates; only the first is the signing "
            f"certificate, the rest are ignored (the chain belongs in {CERT_CHAIN})"
        )
    key = pem.private_key(contents[CA_KEY])
    listed_roots = pem.certificates(contents[ROOT_CERT], ROOT_CERT)
    listed = pem.certificates(contents[CERT_CHAIN], CERT_CHAIN)

    check_key_matches(key, certificate)
    check_signing_certificate(certificate)
    roots = dedupe_roots(listed_roots, warnings)
    path, intermediates = verify_chain(certificate, listed, roots, now, warnings)
    anchor = path[-1]
    expires_soon = _expiry_warnings(path, now, expiry_warning, warnings)
    _expired_root_warnings(roots, anchor, now, warnings)

    return PluggedCa(
        directory=directory,
        certificate=certificate,
        private_key=key,
        chain=intermediates,
        roots=roots,
        anchor=anchor,
        fingerprint=files.content_fingerprint(contents),
        not_after=min(cert.not_valid_after_utc for cert in path),
        expires_soon=expires_soon,
        warnings=tuple(warnings),
    )


def _expiry_warnings(
    path: tuple[x509.Certificate, ...], now: datetime, within: timedelta, warnings: list[str]
) -> bool:
    soon = False
    for cert in path:
        left = cert.not_valid_after_utc - now
        if left < within:
            soon = True
            warnings.append(
                f"{describe(cert, path)} expires in {left.days} day(s), at "
                f"{cert.not_valid_after_utc.isoformat()}"
            )
    return soon


def _expired_root_warnings(
    roots: tuple[x509.Certificate, ...], anchor: x509.Certificate, now: datetime, warnings: list[str]
) -> None:
    for root in roots:
        if root != anchor and now > root.not_valid_after_utc:
            warnings.append(
                f"{ROOT_CERT} still lists {name(root)}, which expired at "
                f"{root.not_valid_after_utc.isoformat()}"
            )
