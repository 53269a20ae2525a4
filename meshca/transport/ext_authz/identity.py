"""Is the calling workload's identity still good? Blocked SPIFFE IDs and revoked certificates
are denied at ext_authz too, not only at issuance.

The block list is re-read at most every `ttl` seconds (a shared snapshot, not a query per
check); revocation is asked per certificate serial and remembered for the same time.
"""

from __future__ import annotations

import functools
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Protocol

from cryptography import x509


class Inventory(Protocol):
    def blocked(self) -> list[dict[str, object]]: ...
    def usable(self, serial: str) -> bool: ...


class IdentityCheck(Protocol):
    def refusal(self, principal: str | None, certificate: str) -> str | None:
        """Why this caller is refused, or None (called from the server's threads)."""


class NoIdentityCheck:
    def refusal(self, principal: str | None, certificate: str) -> str | None:
        return None


class InventoryIdentityCheck:
    def __init__(self, inventory: Inventory, ttl: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._inventory = inventory
        self._ttl = ttl
        self._clock = clock
        self._blocked: frozenset[str] = frozenset()
        self._blocked_at = float("-inf")
        self._serials: dict[str, tuple[bool, float]] = {}
        self._refreshing = threading.Lock()

    def refusal(self, principal: str | None, certificate: str) -> str | None:
        now = self._clock()
        # One thread re-reads the block list when it is due; the others (and every check
        # while the list is fresh) use the snapshot they find.
        if now - self._blocked_at > self._ttl and self._refreshing.acquire(blocking=False):
            try:
                rows = self._inventory.blocked()
                self._blocked, self._blocked_at = frozenset(str(r["spiffe_id"]) for r in rows), now
            finally:
                self._refreshing.release()
        if principal and principal in self._blocked:
            return f"source identity {principal} is blocked"
        serial = _serial(certificate)
        if serial is None:
            return None
        usable, at = self._serials.get(serial, (True, float("-inf")))
        if now - at > self._ttl:
            usable = self._inventory.usable(serial)
            if len(self._serials) > 100_000:
                self._serials.clear()
            self._serials[serial] = (usable, now)
        return None if usable else f"source certificate {serial} is revoked or not on record"


@functools.lru_cache(maxsize=4096)  # a workload sends the same certificate until it renews
def _serial(certificate: str) -> str | None:
    """Envoy sends the peer certificate URL-encoded PEM (when configured to)."""
    if not certificate:
        return None
    try:
        cert = x509.load_pem_x509_certificate(urllib.parse.unquote(certificate).encode())
    except ValueError:
        return None
    return format(cert.serial_number, "x")
