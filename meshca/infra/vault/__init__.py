"""Vault as meshca's key store: the only package that imports hvac.

Errors are described in `errors`; `session.VaultSession` keeps a token alive (token,
Kubernetes or AppRole auth); `transit` signs with keys that never leave Vault; `kv` stores
keys with check-and-set; `pki` has Vault's PKI engine sign meshca's intermediate; `health`
says whether Vault is there and retries with backoff; `keeper` watches it while idle.
"""

from meshca.infra.vault.auth import AppRoleAuth, KubernetesAuth, TokenAuth, TokenLease, VaultAuth
from meshca.infra.vault.errors import (
    VaultBadResponse,
    VaultConflict,
    VaultDenied,
    VaultError,
    VaultNotFound,
    VaultRejected,
    VaultUnavailable,
)
from meshca.infra.vault.health import Backoff, VaultHealth, retry_with_backoff
from meshca.infra.vault.keeper import VaultKeeper
from meshca.infra.vault.kv import KeyStoreConflict, KvKeyStore, KvLocation
from meshca.infra.vault.pki import SignedIntermediate, VaultPkiUpstream
from meshca.infra.vault.session import VaultConnection, VaultSession
from meshca.infra.vault.transit import TransitKeys, TransitLocation, TransitSigner

__all__ = [
    "AppRoleAuth",
    "Backoff",
    "KeyStoreConflict",
    "KubernetesAuth",
    "KvKeyStore",
    "KvLocation",
    "SignedIntermediate",
    "TokenAuth",
    "TokenLease",
    "TransitKeys",
    "TransitLocation",
    "TransitSigner",
    "VaultAuth",
    "VaultBadResponse",
    "VaultConflict",
    "VaultConnection",
    "VaultDenied",
    "VaultError",
    "VaultHealth",
    "VaultKeeper",
    "VaultNotFound",
    "VaultPkiUpstream",
    "VaultRejected",
    "VaultSession",
    "VaultUnavailable",
    "retry_with_backoff",
]
