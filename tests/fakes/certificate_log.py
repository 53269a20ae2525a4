"""In-memory `CertificateLog` (service/ports.py), with the SQL adapter's rules
(infra/db/records.py): at commit, a blocked identity is refused (PermissionDenied), a renewal
by certificate needs the presented certificate on record and unrevoked, and its lineage's last
token check no older than asked (AuthenticationError); the new record inherits that time."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from meshca.errors import AuthenticationError, CaUnavailable, PermissionDenied
from meshca.service.ports import IssuedRecord


class FakeCertificateLog:
    def __init__(self) -> None:
        self.records: dict[str, IssuedRecord] = {}  # serial: record, as committed
        self.blocked: set[str] = set()  # SPIFFE IDs an administrator blocked
        self.revoked: set[str] = set()  # serials
        self.down = False  # True: every record() raises CaUnavailable, as a database outage
        self.refused = 0  # records refused by a precondition (not by an outage)

    # ---- steering (not part of the port) ------------------------------------------------

    def block(self, spiffe_id: str) -> None:
        self.blocked.add(spiffe_id)

    def revoke(self, serial: str) -> None:
        self.revoked.add(serial)

    def forget(self, serial: str) -> None:
        """As if the record had never been written (a certificate of another CA's database)."""
        del self.records[serial]

    # ---- CertificateLog -----------------------------------------------------------------

    async def record(self, record: IssuedRecord, *, renewing_serial: str | None = None,
                     token_checked_since: datetime | None = None) -> None:
        if self.down:
            raise CaUnavailable("certificate log is unavailable")
        inherited: datetime | None = None
        if renewing_serial:
            presented = self.records.get(renewing_serial)
            if presented is None or renewing_serial in self.revoked:
                self.refused += 1
                raise AuthenticationError("client certificate is revoked, unknown, or under a CA "
                                          "key marked compromised; authenticate with a token",
                                          reason="certificate")
            inherited = presented.token_checked_at or presented.issued_at
            if token_checked_since is not None and inherited < token_checked_since:
                self.refused += 1
                raise AuthenticationError("present a service-account token: the last token check "
                                          "for this identity is too old", reason="renewal_age")
        if record.spiffe_id in self.blocked:
            self.refused += 1
            raise PermissionDenied("identity is blocked by an administrator")
        self.records[record.serial] = dataclasses.replace(
            record, token_checked_at=record.token_checked_at or inherited)
