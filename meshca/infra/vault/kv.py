"""CA keys in Vault KV v2, written with check-and-set so no replica overwrites another.

Every key is written once with `cas: 0` ("only if absent"): if two replicas race to store
a key under one name, Vault takes the first and answers the second 400, which becomes
`KeyStoreConflict` naming the version that won. Locations pin the version written, so every
replica loads exactly the key the journal row was created with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshca.core.keys import KeyType, SigningKey
from meshca.infra.vault.errors import VaultBadResponse, VaultConflict, VaultError
from meshca.infra.vault.session import VaultSession

SCHEME = "vault-kv:"
_PATH = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class KeyStoreConflict(VaultConflict):
    """Another writer stored this key first; `current_version` is the version that won."""

    def __init__(self, message: str, current_version: int | None) -> None:
        super().__init__(message, 400)
        self.current_version = current_version


@dataclass(frozen=True, slots=True)
class KvLocation:
    """`vault-kv:<mount>/data/<path>#<version>`."""

    mount: str
    path: str
    version: int

    def __str__(self) -> str:
        return f"{SCHEME}{self.mount}/data/{self.path}#{self.version}"

    @classmethod
    def parse(cls, location: str) -> KvLocation:
        mount, sep, rest = location.removeprefix(SCHEME).partition("/data/")
        path, hash_sep, version = rest.partition("#")
        if not location.startswith(SCHEME) or not sep or not hash_sep or not version.isdigit() \
                or not mount or not _PATH.match(path):
            raise ValueError(f"key location {location!r} is not a Vault KV location")
        return cls(mount, path, int(version))


class KvKeyStore:
    """The `KeyStore` port on KV v2: `put` creates `<prefix>/<name>` once, `load` reads a version."""

    def __init__(self, session: VaultSession, mount: str = "secret", prefix: str = "meshca/ca-keys") -> None:
        if not _PATH.match(prefix):
            raise ValueError(f"{prefix!r} is not a valid KV path prefix")
        self._session = session
        self._mount = mount
        self._prefix = prefix

    def put(self, name: str, key: SigningKey) -> str:
        path = f"{self._prefix}/{name}"
        if not _PATH.match(path):
            raise ValueError(f"{name!r} is not a valid key name")
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        secret = {"private_key_pem": pem, "key_type": KeyType.of(key).value}
        version = self.write(path, secret, expected_version=0)
        return str(KvLocation(self._mount, path, version))

    def load(self, location: str) -> SigningKey:
        where = KvLocation.parse(location)
        data = self.read(where.path, where.version)
        pem = data.get("private_key_pem")
        if not isinstance(pem, str):
            raise VaultBadResponse(f"{location}: no private_key_pem in the secret")
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise VaultBadResponse(f"{location} does not hold an EC or RSA key")
        return key

    def write(self, path: str, secret: dict[str, Any], *, expected_version: int) -> int:
        """Write `secret` only if the current version is `expected_version` (0: absent)."""
        try:
            response = self._session.call(f"KV write {self._mount}/{path}", lambda client:
                                          client.secrets.kv.v2.create_or_update_secret(
                                              path=path, secret=secret, cas=expected_version,
                                              mount_point=self._mount))
        except VaultConflict:
            current = self.current_version(path)
            raise KeyStoreConflict(f"{self._mount}/{path}: expected version {expected_version}, but "
                                   f"version {current} is there: another replica wrote it first",
                                   current) from None
        return _version(response.get("data") if isinstance(response, dict) else None, path)

    def read(self, path: str, version: int | None = None) -> dict[str, Any]:
        response = self._session.call(f"KV read {self._mount}/{path}", lambda client:
                                      client.secrets.kv.v2.read_secret_version(
                                          path=path, version=version, mount_point=self._mount,
                                          raise_on_deleted_version=True))
        outer = response.get("data") if isinstance(response, dict) else None
        data = outer.get("data") if isinstance(outer, dict) else None
        if not isinstance(data, dict):
            raise VaultBadResponse(f"{self._mount}/{path}: the secret has no data (deleted?)")
        return data

    def current_version(self, path: str) -> int | None:
        try:
            response = self._session.call(f"KV metadata {self._mount}/{path}", lambda client:
                                          client.secrets.kv.v2.read_secret_metadata(
                                              path=path, mount_point=self._mount))
        except VaultError:
            return None
        data = response.get("data") if isinstance(response, dict) else None
        value = data.get("current_version") if isinstance(data, dict) else None
        return value if isinstance(value, int) else None


def _version(data: Any, path: str) -> int:
    value = data.get("version") if isinstance(data, dict) else None
    if not isinstance(value, int) or value < 1:
        raise VaultBadResponse(f"{path}: Vault's write answer has no version")
    return value
