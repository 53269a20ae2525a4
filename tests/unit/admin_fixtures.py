"""Shared pieces of the admin service unit tests: a settable clock and issued certificates."""

from __future__ import annotations

from datetime import datetime, timedelta

from meshca.service.admin_ports import CertificateDetail
from tests.unit.pki import NOW


class FixedClock:
    def __init__(self, now: datetime = NOW) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


def certificate(serial: str, *, namespace: str = "shop", account: str = "web",
                issued: timedelta = timedelta(0), valid: timedelta = timedelta(hours=24),
                issuer: int = 7, revoked_at: datetime | None = None,
                reason: str | None = None) -> CertificateDetail:
    """Issued at NOW + `issued`, valid from then for `valid`."""
    at = NOW + issued
    return CertificateDetail(
        serial=serial, spiffe_id=f"spiffe://cluster.local/ns/{namespace}/sa/{account}",
        namespace=namespace, service_account=account, pod_name=None, pod_uid=None,
        not_before=at, not_after=at + valid, issuer_generation_id=issuer,
        fingerprint_sha256="ab" * 32, key_type="ec-p256", issued_at=at, revoked_at=revoked_at,
        revocation_reason=reason, certificate_pem="-----BEGIN CERTIFICATE-----\n")
