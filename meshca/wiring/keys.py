"""The key backend every part of one process uses: sealed files, or HashiCorp Vault.

One per process (and settings): a Vault session, its token renewal and its health belong to
the process, not to each caller.
"""

from __future__ import annotations

import functools
import logging

from meshca.config import Settings
from meshca.infra.keyfiles import KeyEncryptionKey
from meshca.infra.vault.keeper import VaultKeeper
from meshca.service.keystore_select import KeyBackend, open_key_backend
from meshca.wiring.keystore_settings import keystore_settings

log = logging.getLogger("meshca")


@functools.lru_cache(maxsize=4)
def key_backend(settings: Settings) -> KeyBackend:
    """Raises KeystoreConfigError (a ValueError) naming the flag when the settings can't work."""
    backend = open_key_backend(keystore_settings(settings), settings.key_dir or settings.data_dir)
    if backend.session is not None:
        # Looks at Vault every few seconds even when idle: renews or logs in again before the
        # token lapses, and keeps `backend.health` (readiness, the alert gauge) current.
        VaultKeeper(backend.session).start()
    return backend


def key_encryption_key(settings: Settings) -> KeyEncryptionKey:
    return key_backend(settings).kek
