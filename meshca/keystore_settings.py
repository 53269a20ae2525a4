"""Where CA keys live (`--keystore` and the Vault flags), as one value.

Plain data: the settings hold it, `meshca.wiring.keystore` builds the backend from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

KEYSTORES = ("file", "vault-transit", "vault-kv")
UPSTREAMS = ("none", "vault-pki")
VAULT_AUTH_METHODS = ("token", "kubernetes", "approle")
# Where Kubernetes mounts a pod's service-account token.
DEFAULT_KUBE_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


@dataclass(frozen=True, slots=True)
class KeystoreSettings:
    keystore: str = "file"
    kek_file: Path | None = None  # None: `<data-dir>.kek`, beside (never inside) the data dir
    vault_addr: str | None = None
    vault_ca_cert: Path | None = None
    vault_namespace: str | None = None
    vault_auth: str = "token"
    vault_auth_mount: str | None = None  # default: the method's name
    vault_role: str | None = None  # Kubernetes auth role
    vault_token_file: Path | None = None  # token auth; else $VAULT_TOKEN
    vault_kube_token_file: Path = DEFAULT_KUBE_TOKEN
    vault_role_id: str | None = None  # AppRole
    vault_secret_id_file: Path | None = None  # AppRole
    vault_transit_mount: str = "transit"
    vault_transit_intermediate: bool = False
    vault_kv_mount: str = "secret"
    vault_kv_prefix: str = "meshca/ca-keys"
    vault_timeout: float = 10.0
    upstream: str = "none"  # "vault-pki": Vault's PKI engine signs meshca's intermediates
    vault_pki_mount: str = "pki"
