"""Readiness: may this process be sent traffic?"""

from __future__ import annotations

from collections.abc import Callable

from meshca.core.authority import SigningAuthority
from meshca.errors import StoreUnavailable
from meshca.service.admin_ports import StoreProbe


class Readiness:
    def __init__(self, authority: Callable[[], SigningAuthority | None], store: StoreProbe,
                 key_service_ready: Callable[[], bool] | None = None,
                 warnings: Callable[[], list[str]] | None = None) -> None:
        """`key_service_ready`: whether the key service (Vault) answers; None without one.
        `warnings`: what a ready process still reports (a federated bundle missing or not
        refreshed): worth an operator's look, never a reason to take traffic away."""
        self._authority = authority
        self._warnings = warnings or (lambda: [])
        self._store = store
        self._key_service_ready = key_service_ready

    def not_ready(self) -> str | None:
        """Why this process is not ready, or None: the signing key is loaded, the key
        service answers if signing needs it, and the database answers."""
        authority = self._authority()
        if authority is None:
            return "signing key is not loaded"
        # Vault matters only when signing needs it: with the intermediate's key in a local
        # sealed file, issuance goes on through a Vault outage (only rotation waits).
        if (self._key_service_ready is not None and authority.is_remote
                and not self._key_service_ready()):
            return "the signing key's service (Vault) is not reachable"
        try:
            self._store.ping()
        except StoreUnavailable:
            return "database is not reachable"
        return None

    def warnings(self) -> list[str]:
        return self._warnings()
