"""CA keys as non-exportable Vault Transit keys: created, read (public half) and used to sign.

meshca hashes the to-be-signed bytes itself and sends only the digest (`prehashed: true`),
asking for the X.509 encodings: ASN.1 DER for ECDSA, PKCS#1 v1.5 for RSA. Each signer is
pinned to the key version its certificate carries, so rotating the Transit key in Vault
never yields signatures that do not match the certificate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshca.core.keys import KeyType
from meshca.core.remote_signing import SigningPublicKey, hash_for
from meshca.infra.vault.errors import VaultBadResponse, VaultNotFound, VaultRejected
from meshca.infra.vault.session import VaultSession

SCHEME = "vault-transit:"
TRANSIT_KEY_TYPES = {
    KeyType.EC_P256: "ecdsa-p256", KeyType.EC_P384: "ecdsa-p384",
    KeyType.RSA_2048: "rsa-2048", KeyType.RSA_3072: "rsa-3072", KeyType.RSA_4096: "rsa-4096",
}
_VAULT_HASH = {"sha256": ("sha2-256", hashlib.sha256), "sha384": ("sha2-384", hashlib.sha384)}
_SIGNATURE = re.compile(r"^vault:v(\d+):([A-Za-z0-9+/=]+)$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True, slots=True)
class TransitLocation:
    """`vault-transit:<mount>/keys/<name>#<version>`, as kept in the CA journal."""

    mount: str
    name: str
    version: int

    def __str__(self) -> str:
        return f"{SCHEME}{self.mount}/keys/{self.name}#{self.version}"

    @classmethod
    def parse(cls, location: str) -> TransitLocation:
        body = location.removeprefix(SCHEME)
        mount, sep, rest = body.partition("/keys/")
        name, hash_sep, version = rest.partition("#")
        if not location.startswith(SCHEME) or not sep or not hash_sep or not version.isdigit() \
                or not mount or not _NAME.match(name):
            raise ValueError(f"key location {location!r} is not a Vault Transit location")
        return cls(mount, name, int(version))


class TransitSigner:
    """A `Signer` whose private key stays in Vault."""

    def __init__(self, session: VaultSession, location: TransitLocation,
                 public_key: SigningPublicKey) -> None:
        self._session = session
        self.location = location
        self._public = public_key
        self._hash = hash_for(public_key)
        self._vault_hash, self._digest = _VAULT_HASH[self._hash.name]

    def __repr__(self) -> str:
        return f"TransitSigner({self.location})"

    @property
    def public_key(self) -> SigningPublicKey:
        return self._public

    def sign(self, tbs: bytes) -> bytes:
        digest = self._digest(tbs).digest()
        options: dict[str, Any] = {
            "name": self.location.name, "hash_input": base64.b64encode(digest).decode(),
            "key_version": self.location.version, "hash_algorithm": self._vault_hash,
            "prehashed": True, "marshaling_algorithm": "asn1", "mount_point": self.location.mount,
        }
        if isinstance(self._public, rsa.RSAPublicKey):
            options["signature_algorithm"] = "pkcs1v15"  # Vault's RSA default is PSS
        response = self._session.call(f"transit sign with {self.location.name}",
                                      lambda client: client.secrets.transit.sign_data(**options))
        return _signature_bytes(response, self.location.version)


class TransitKeys:
    """Creates CA keys in Transit and opens signers for keys named in the journal."""

    def __init__(self, session: VaultSession, mount: str = "transit") -> None:
        self._session = session
        self._mount = mount

    def create(self, name: str, key_type: KeyType) -> TransitSigner:
        """A new non-exportable key; refuses a name that already exists (never reuses a key)."""
        if not _NAME.match(name):
            raise ValueError(f"{name!r} is not a valid Transit key name")
        existing = self._read(name, must_exist=False)
        if existing is not None:
            raise VaultRejected(f"Transit key {name} already exists in {self._mount}; "
                                "meshca creates every CA key fresh")
        self._session.call(f"transit create key {name}", lambda client: client.secrets.transit.create_key(
            name=name, key_type=TRANSIT_KEY_TYPES[key_type], exportable=False,
            allow_plaintext_backup=False, mount_point=self._mount))
        data = self._read(name, must_exist=True)
        assert data is not None
        if data.get("exportable") or data.get("type") != TRANSIT_KEY_TYPES[key_type]:
            raise VaultBadResponse(f"Transit key {name} is not a non-exportable "
                                   f"{TRANSIT_KEY_TYPES[key_type]} key")
        version = int(data.get("latest_version") or 0)
        location = TransitLocation(self._mount, name, version)
        return TransitSigner(self._session, location, _public_key(data, version, str(location)))

    def signer(self, location: str) -> TransitSigner:
        where = TransitLocation.parse(location)
        data = self._read_at(where.mount, where.name, must_exist=True)
        assert data is not None
        return TransitSigner(self._session, where, _public_key(data, where.version, location))

    def _read(self, name: str, *, must_exist: bool) -> dict[str, Any] | None:
        return self._read_at(self._mount, name, must_exist=must_exist)

    def _read_at(self, mount: str, name: str, *, must_exist: bool) -> dict[str, Any] | None:
        try:
            response = self._session.call(f"transit read key {name}", lambda client:
                                          client.secrets.transit.read_key(name=name, mount_point=mount))
        except VaultNotFound:
            if must_exist:
                raise
            return None
        data = response.get("data") if isinstance(response, dict) else None
        if not isinstance(data, dict):
            raise VaultBadResponse(f"Vault's answer for Transit key {name} has no data")
        return data


def _public_key(data: dict[str, Any], version: int, where: str) -> SigningPublicKey:
    keys = data.get("keys")
    entry = keys.get(str(version)) if isinstance(keys, dict) else None
    pem = entry.get("public_key") if isinstance(entry, dict) else None
    if not isinstance(pem, str) or not pem:
        raise VaultBadResponse(f"{where}: Vault shows no public key for version {version}")
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise VaultBadResponse(f"{where}: not an ECDSA or RSA key")
    return key


def _signature_bytes(response: Any, version: int) -> bytes:
    data = response.get("data") if isinstance(response, dict) else None
    text = data.get("signature") if isinstance(data, dict) else None
    match = _SIGNATURE.match(text) if isinstance(text, str) else None
    if match is None:
        raise VaultBadResponse("Vault's sign answer has no vault:v<N>:<signature>")
    if int(match.group(1)) != version:
        raise VaultBadResponse(f"Vault signed with key version {match.group(1)}, not {version}")
    try:
        return base64.b64decode(match.group(2), validate=True)
    except binascii.Error:
        raise VaultBadResponse("Vault's signature is not valid base64") from None
