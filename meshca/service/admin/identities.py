"""Blocked identities: a blocked SPIFFE ID gets no new certificate until it is unblocked."""

from __future__ import annotations

from meshca.core.clock import Clock
from meshca.service.admin.audit import audit_entry
from meshca.service.admin_ports import BlockedIdentity, IdentityBlocklist


class IdentityAdmin:
    def __init__(self, blocklist: IdentityBlocklist, clock: Clock) -> None:
        self._blocklist = blocklist
        self._clock = clock

    def blocked(self) -> list[BlockedIdentity]:
        return self._blocklist.blocked()

    def block(self, spiffe_id: str, reason: str, actor: str) -> None:
        """Conflict if it already is. `spiffe_id` is in its canonical form."""
        self._blocklist.block(spiffe_id, reason, audit_entry(
            self._clock, actor, "identity.block", spiffe_id, detail=reason or None))

    def unblock(self, spiffe_id: str, actor: str) -> None:
        """NotFound unless it is blocked."""
        self._blocklist.unblock(spiffe_id, audit_entry(
            self._clock, actor, "identity.unblock", spiffe_id))
