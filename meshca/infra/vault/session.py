"""One authenticated connection to Vault whose token never lapses while meshca runs.

Before each call the session checks its lease: past two thirds of its TTL it renews the
token (`auth/token/renew-self`), and when renewal is impossible or refused (not renewable,
max TTL reached, token revoked) it logs in again if its auth method can. A call refused
with 403 is retried once after a fresh login, because a token can die earlier than its TTL
said (revoked, Vault restored from backup). This is the only module that builds hvac clients.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import hvac
import hvac.exceptions

from meshca.infra.vault.auth import TokenLease, VaultAuth, lease_from_auth
from meshca.infra.vault.errors import VaultDenied, VaultError, VaultUnavailable, translate
from meshca.infra.vault.health import VaultHealth

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class VaultConnection:
    addr: str
    ca_cert: Path | None = None  # None: the system trust store
    namespace: str | None = None  # Vault Enterprise / HCP namespace, sent as X-Vault-Namespace
    timeout: float = 10.0

    def client(self) -> Any:
        verify: str | bool = str(self.ca_cert) if self.ca_cert is not None else True
        return hvac.Client(url=self.addr, verify=verify, namespace=self.namespace or None,
                           timeout=self.timeout)


class VaultSession:
    def __init__(self, connection: VaultConnection, auth: VaultAuth, *,
                 clock: Callable[[], float] = time.monotonic, health: VaultHealth | None = None) -> None:
        self._connection = connection
        self._auth = auth
        self._clock = clock
        self.health = health or VaultHealth(clock=clock)
        self._client = connection.client()
        self._lease: TokenLease | None = None
        self._lock = threading.Lock()
        self.renewals = 0
        self.logins = 0

    def __repr__(self) -> str:
        return f"VaultSession(addr={self._connection.addr!r}, auth={self._auth.name})"

    @property
    def addr(self) -> str:
        return self._connection.addr

    def call(self, operation: str, fn: Callable[[Any], T]) -> T:
        """Run `fn(client)` with a live token; raise a VaultError naming `operation`."""
        try:
            client = self._fresh_client(operation, force_login=False)
            try:
                result = fn(client)
            except hvac.exceptions.Forbidden:
                if not self._auth.can_login_again:
                    raise
                log.info("Vault refused %s with 403; logging in again and retrying once", operation)
                result = fn(self._fresh_client(operation, force_login=True))
        except (hvac.exceptions.VaultError, OSError, VaultError) as exc:
            error = translate(exc, operation)
            if isinstance(error, VaultUnavailable):
                self.health.failed(error)
            raise error from None  # hvac's exception holds the response body: keep it out
        self.health.succeeded()
        return result

    def ensure_token(self) -> None:
        """Log in or renew now if due (a start-up and background health check)."""
        self.call("Vault login", lambda client: None)

    def _fresh_client(self, operation: str, *, force_login: bool) -> Any:
        with self._lock:
            now = self._clock()
            lease = self._lease
            if force_login or lease is None:
                self._login(now)
            elif lease.renew_at is not None and now >= lease.renew_at:
                self._renew_or_login(lease, now)
            return self._client

    def _login(self, now: float) -> None:
        self._client.token = None
        lease = self._auth.login(self._client, now)
        self._client.token = lease.token
        self._lease = lease
        self.logins += 1
        log.info("logged in to Vault with %s auth; token valid for %s", self._auth.name,
                 f"{lease.ttl:.0f}s" if lease.ttl else "ever")

    def _renew_or_login(self, lease: TokenLease, now: float) -> None:
        expired = lease.expires_at is not None and now >= lease.expires_at
        if lease.renewable and not expired:
            try:
                renewed = lease_from_auth(self._client.auth.token.renew_self(
                    increment=f"{max(int(lease.ttl), 1)}s"), now)
            except (hvac.exceptions.VaultError, OSError) as exc:
                error = translate(exc, "Vault token renewal")
                if isinstance(error, VaultUnavailable) or not self._auth.can_login_again:
                    if isinstance(error, VaultUnavailable) and not expired:
                        return  # keep the live token; try again on the next call
                    raise error from None
                log.info("Vault token renewal refused (%s); logging in again", error)
            else:
                # Near its max TTL Vault caps the renewal; once too short, log in afresh.
                if renewed.ttl >= lease.ttl / 3 or not self._auth.can_login_again:
                    self._lease = TokenLease(lease.token, renewed.ttl, renewed.renewable, now)
                    self.renewals += 1
                    log.info("renewed the Vault token; valid for %.0fs", renewed.ttl)
                    return
        if not self._auth.can_login_again:
            if expired:
                raise VaultDenied("the Vault token has expired and cannot be renewed; "
                                  "give meshca a renewable token or a re-login method")
            return  # not renewable: use it until it expires
        self._login(now)
