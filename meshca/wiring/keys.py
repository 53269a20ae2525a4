"""The key backend of one process: sealed files, or HashiCorp Vault.

Built once per process, by whoever starts the process (`serve`, a worker's `child_main`), and
passed down to everything that needs a key or the KEK: a Vault session, its token renewal
and its health belong to the process, not to each caller.
"""

from __future__ import annotations

from meshca.config import Settings
from meshca.infra.vault.keeper import VaultKeeper
from meshca.wiring.keystore import KeyBackend, open_key_backend
from meshca.wiring.keystore_settings import keystore_settings


def open_process_keys(settings: Settings) -> KeyBackend:
    """Raises KeystoreConfigError (a ValueError) naming the flag when the settings can't work.
    With Vault, starts the keeper: call this once per process."""
    backend = open_key_backend(keystore_settings(settings), settings.key_dir or settings.data_dir)
    if backend.session is not None:
        # Looks at Vault every few seconds even when idle: renews or logs in again before the
        # token lapses, and keeps `backend.health` (readiness, the alert gauge) current.
        VaultKeeper(backend.session).start()
    return backend
