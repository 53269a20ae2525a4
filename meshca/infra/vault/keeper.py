"""Keeps the Vault token alive and the health current while meshca runs, even when idle.

With the root alone in Transit, meshca may not call Vault for months; without this loop a
periodic token would expire unrenewed, and an outage would go unnoticed until the rotation
that needs Vault. Every `interval` seconds it looks the token up (renewing or logging in when
due); failures back off exponentially and mark the health, which drives readiness and the
alert gauge.
"""

from __future__ import annotations

import logging
import threading

from meshca.infra.vault.errors import VaultError, VaultUnavailable
from meshca.infra.vault.health import Backoff
from meshca.infra.vault.session import VaultSession

log = logging.getLogger(__name__)


class VaultKeeper:
    def __init__(self, session: VaultSession, *, interval: float = 15.0,
                 backoff: Backoff | None = None) -> None:
        self._session = session
        self._interval = interval
        self._backoff = backoff or Backoff()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vault-keeper", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True once Vault answered with a valid token; False if `timeout` passed first."""
        return self._ready.wait(timeout)

    def check_once(self) -> None:
        """One look at Vault: token lookup-self, after renewing or logging in if due."""
        self._session.call("Vault token check", lambda client: client.auth.token.lookup_self())

    def _run(self) -> None:
        delays = self._backoff.delays()
        while not self._stop.is_set():
            try:
                self.check_once()
            except VaultUnavailable as exc:
                log.warning("Vault unavailable, retrying: %s", exc)
                delay = next(delays)
            except VaultError as exc:  # refused or misconfigured: keep trying, loudly
                self._session.health.failed(exc)
                log.error("Vault refused meshca, retrying: %s", exc)
                delay = next(delays)
            else:
                self._ready.set()
                delays = self._backoff.delays()
                delay = self._interval
            self._stop.wait(delay)
