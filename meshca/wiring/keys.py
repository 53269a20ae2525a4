"""The key backend of one process: sealed files, or HashiCorp Vault.

Built once per process, by whoever starts the process (`serve`, a worker's `child_main`), and
passed down to everything that needs a key or the KEK: a Vault session, its token renewal
and its health belong to the process, not to each caller.
"""

from __future__ import annotations

from meshca.config import Settings
from meshca.infra.vault import VaultError, VaultSession, VaultUnavailable
from meshca.infra.vault.keeper import VaultKeeper
from meshca.wiring.keystore import KeyBackend, KeystoreConfigError, open_key_backend
from meshca.wiring.keystore_settings import keystore_settings


class VaultLoginRefused(KeystoreConfigError):
    """Vault answered meshca's login and said no: a wrong token, role or secret ID. Retrying
    cannot help, so start-up stops with this one line (exit 2, as every configuration error:
    cli/main.py)."""


def open_process_keys(settings: Settings) -> KeyBackend:
    """Raises KeystoreConfigError (a ValueError) naming the flag when the settings can't work.
    With Vault, logs in once and starts the keeper: call this once per process."""
    backend = open_key_backend(keystore_settings(settings), settings.key_dir or settings.data_dir)
    if backend.session is not None:
        first_login(backend.session, settings.vault_auth)
        # Looks at Vault every few seconds even when idle: renews or logs in again before the
        # token lapses, and keeps `backend.health` (readiness, the alert gauge) current.
        VaultKeeper(backend.session).start()
    return backend


def first_login(session: VaultSession, method: str) -> None:
    """Vault away is no reason to stop (the CA that exists is served, start-up waits for a
    first one); Vault refusing the credential is."""
    try:
        session.ensure_token()
    except VaultUnavailable:
        return
    except VaultError as exc:
        detail = str(exc).removesuffix(" (does the token's policy grant this path?)")
        raise VaultLoginRefused(f"Vault refused meshca's {method} login: {detail}; check "
                                f"{_CREDENTIAL_FLAGS.get(method, '--vault-auth')}") from None


_CREDENTIAL_FLAGS = {
    "token": "the token in --vault-token-file or $VAULT_TOKEN",
    "kubernetes": "--vault-role, the token in --vault-kube-token-file (its audience) and the "
                  "role's bound service account",
    "approle": "--vault-role-id and --vault-secret-id-file",
}
