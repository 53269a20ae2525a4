"""Private keys in files, encrypted at rest under a key-encryption key (KEK).

A sealed key file is PEM-armored (`MESHCA ENCRYPTED PRIVATE KEY`) around
`b"MKE1" | kek id (8) | nonce (12) | AES-256-GCM(PKCS#8 DER)`, authenticated together with
the file's purpose (its path in the data dir), so a file moved to another name, or sealed
under another KEK, is refused rather than mis-read. The KEK lives outside the data dir (a
file or the `MESHCA_KEK` environment variable), so a copied data dir or database alone
reveals no private key. Old plaintext PEM keys are read once and re-sealed in place.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from meshca.core.keys import SigningKey
from meshca.errors import ConfigurationError
from meshca.infra.secret_files import FIX as SECRET_FILE_FIX
from meshca.infra.secret_files import readable_by_others

log = logging.getLogger(__name__)

_SCHEME = "file:"
KEK_ENV = "MESHCA_KEK"
_KEK_BYTES = 32
_MAGIC = b"MKE1"
_ID_BYTES = 8
_NONCE_BYTES = 12
_LABEL = "MESHCA ENCRYPTED PRIVATE KEY"
_PLAINTEXT_LABELS = (b"-----BEGIN PRIVATE KEY-----", b"-----BEGIN EC PRIVATE KEY-----",
                     b"-----BEGIN RSA PRIVATE KEY-----")


class KeyFileError(ConfigurationError):
    """A key file or the KEK cannot be used; the message names the file, never key bytes."""


def write_private_file(path: Path, data: bytes) -> None:
    """Create or replace `path` atomically with mode 0600 from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def private_key_pem(key: PrivateKeyTypes) -> bytes:
    """Plaintext PKCS#8 PEM: only for keys handed to a user (`meshca request`), never stored."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key_pem(data: bytes) -> PrivateKeyTypes:
    return serialization.load_pem_private_key(data, password=None)


class KeyEncryptionKey:
    """32 random bytes; subkeys for wrapping, the key id and the TLS password come by HKDF."""

    __slots__ = ("_aead", "_tls_password", "key_id")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != _KEK_BYTES:
            raise KeyFileError(f"a key-encryption key is {_KEK_BYTES} bytes, not {len(secret)}")
        self._aead = AESGCM(_derive(secret, b"meshca kek: wrap v1"))
        self.key_id = _derive(secret, b"meshca kek: id v1")[:_ID_BYTES]
        self._tls_password = base64.urlsafe_b64encode(_derive(secret, b"meshca kek: tls v1"))

    def __repr__(self) -> str:
        return f"KeyEncryptionKey(id={self.key_id.hex()})"

    @classmethod
    def generate(cls) -> KeyEncryptionKey:
        return cls(secrets.token_bytes(_KEK_BYTES))

    @classmethod
    def from_text(cls, text: str, source: str) -> KeyEncryptionKey:
        """Base64 (standard or URL-safe) of 32 bytes, as written by `load_or_create`."""
        cleaned = text.strip()
        try:
            secret = base64.b64decode(cleaned.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileError(f"{source} is not base64 of {_KEK_BYTES} bytes") from None
        if len(secret) != _KEK_BYTES:
            raise KeyFileError(f"{source} is not base64 of {_KEK_BYTES} bytes")
        return cls(secret)

    @classmethod
    def load_or_create(cls, kek_file: Path, data_dir: Path,
                       env: Mapping[str, str] = os.environ) -> KeyEncryptionKey:
        """`MESHCA_KEK` if set, else `kek_file`, created (0600) on first start when absent.

        A file inside the data dir is refused: a copy of the dir would carry its own key.
        """
        if env.get(KEK_ENV):
            return cls.from_text(env[KEK_ENV], f"${KEK_ENV}")
        if _is_within(kek_file, data_dir):
            raise KeyFileError(f"--kek-file {kek_file} is inside the data dir {data_dir}; keep it "
                               "elsewhere (or use $MESHCA_KEK) so a copy of the data dir reveals no key")
        try:
            text = kek_file.read_text()
        except FileNotFoundError:
            pass
        else:
            if readable_by_others(kek_file.stat()):
                log.warning("the key-encryption key file %s is readable by other users; %s",
                            kek_file, SECRET_FILE_FIX)
            return cls.from_text(text, f"--kek-file {kek_file}")
        secret = secrets.token_bytes(_KEK_BYTES)
        kek_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:  # O_EXCL: two processes starting together must not write two different keys
            fd = os.open(kek_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls.from_text(kek_file.read_text(), f"--kek-file {kek_file}")
        try:
            os.write(fd, base64.b64encode(secret) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        kek = cls(secret)
        log.warning("created a new key-encryption key in %s (id %s); back it up apart from the "
                    "data dir: without it no stored private key can be read", kek_file, kek.key_id.hex())
        return kek

    def seal(self, plaintext: bytes, purpose: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        header = _MAGIC + self.key_id
        return header + nonce + self._aead.encrypt(nonce, plaintext, header + purpose.encode())

    def open(self, blob: bytes, purpose: str) -> bytes:
        if len(blob) < len(_MAGIC) + _ID_BYTES + _NONCE_BYTES + 16 or not blob.startswith(_MAGIC):
            raise KeyFileError(f"{purpose}: not a sealed key")
        key_id = blob[len(_MAGIC):len(_MAGIC) + _ID_BYTES]
        if key_id != self.key_id:
            raise KeyFileError(f"{purpose}: sealed under key-encryption key {key_id.hex()}, "
                               f"but the configured one is {self.key_id.hex()}")
        header = _MAGIC + key_id
        nonce = blob[len(header):len(header) + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, blob[len(header) + _NONCE_BYTES:], header + purpose.encode())
        except InvalidTag:
            raise KeyFileError(f"{purpose}: sealed key is corrupt or belongs to another file") from None

    def tls_password(self) -> bytes:
        """Password of the serving key file, for `ssl.SSLContext.load_cert_chain(password=...)`."""
        return self._tls_password


def _derive(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def _is_within(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
    except ValueError:
        return False
    return True


def seal_private_key(kek: KeyEncryptionKey, key: PrivateKeyTypes, purpose: str) -> bytes:
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    body = base64.encodebytes(kek.seal(der, purpose))
    return f"-----BEGIN {_LABEL}-----\n".encode() + body + f"-----END {_LABEL}-----\n".encode()


@dataclass(frozen=True, slots=True)
class OpenedKey:
    key: PrivateKeyTypes
    was_plaintext: bool  # an old unencrypted file: the caller should re-seal it


def open_private_key(kek: KeyEncryptionKey, data: bytes, purpose: str) -> OpenedKey:
    stripped = data.strip()
    if stripped.startswith(_PLAINTEXT_LABELS):
        return OpenedKey(load_private_key_pem(stripped), was_plaintext=True)
    begin, end = f"-----BEGIN {_LABEL}-----".encode(), f"-----END {_LABEL}-----".encode()
    if not (stripped.startswith(begin) and stripped.endswith(end)):
        raise KeyFileError(f"{purpose}: neither a sealed key nor a PEM private key")
    try:
        blob = base64.b64decode(b"".join(stripped[len(begin):-len(end)].split()), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(f"{purpose}: sealed key is not valid base64") from None
    der = kek.open(blob, purpose)
    return OpenedKey(serialization.load_der_private_key(der, password=None), was_plaintext=False)


class SealedKeyFile:
    """One private key in one file (the development issuer's key, for instance)."""

    def __init__(self, path: Path, kek: KeyEncryptionKey, purpose: str | None = None) -> None:
        self.path = path
        self._kek = kek
        self._purpose = purpose or path.name

    def exists(self) -> bool:
        return self.path.exists()

    def write(self, key: PrivateKeyTypes) -> None:
        write_private_file(self.path, seal_private_key(self._kek, key, self._purpose))

    def read(self) -> PrivateKeyTypes:
        """The key; a plaintext file from before encryption at rest is re-sealed in place."""
        opened = open_private_key(self._kek, self.path.read_bytes(), self._purpose)
        if opened.was_plaintext:
            self.write(opened.key)
            log.warning("re-encrypted the plaintext private key file %s under key-encryption key %s",
                        self.path, self._kek.key_id.hex())
        return opened.key


def encrypted_tls_key_pem(kek: KeyEncryptionKey, key: PrivateKeyTypes) -> bytes:
    """PKCS#8 PEM encrypted with `kek.tls_password()`: `ssl` and uvicorn load it with that."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(kek.tls_password()))


class FileKeyStore:
    """CA keys under `<data-dir>/keys/`, sealed; locations are `file:keys/<name>.pem`.

    The location format is unchanged from the plaintext days, so journal rows stay valid
    while their files are re-sealed.
    """

    def __init__(self, data_dir: Path, kek: KeyEncryptionKey) -> None:
        self._data_dir = data_dir
        self._kek = kek

    def put(self, name: str, key: SigningKey) -> str:
        relative = Path("keys") / f"{name}.pem"
        self._file(relative).write(key)
        return f"{_SCHEME}{relative.as_posix()}"

    def load(self, location: str) -> SigningKey:
        if not location.startswith(_SCHEME):
            raise ValueError(f"key location {location!r} is not a file location")
        relative = Path(location[len(_SCHEME):])
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"key location {location!r} leaves the data dir")
        key = self._file(relative).read()
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"{location} does not hold an EC or RSA key")
        return key

    def seal_plaintext_keys(self) -> list[str]:
        """Re-seal every plaintext key file (old generations too); return their locations."""
        done = []
        for path in sorted((self._data_dir / "keys").glob("*.pem")):
            if path.read_bytes().lstrip().startswith(_PLAINTEXT_LABELS):
                relative = path.relative_to(self._data_dir)
                self._file(relative).read()
                done.append(f"{_SCHEME}{relative.as_posix()}")
        return done

    def _file(self, relative: Path) -> SealedKeyFile:
        return SealedKeyFile(self._data_dir / relative, self._kek, purpose=relative.as_posix())


def existing_kek(data_dir: Path, kek_file: Path | None = None,
                 env: Mapping[str, str] = os.environ) -> KeyEncryptionKey:
    """The KEK a server beside `data_dir` uses, never a new one: $MESHCA_KEK, else `kek_file`
    (default `<data-dir>.kek`). FileNotFoundError says where it looked."""
    if env.get(KEK_ENV):
        return KeyEncryptionKey.from_text(env[KEK_ENV], f"${KEK_ENV}")
    resolved = data_dir.resolve()
    path = kek_file or resolved.with_name(resolved.name + ".kek")
    try:
        return KeyEncryptionKey.from_text(path.read_text(), f"--kek-file {path}")
    except FileNotFoundError:
        raise FileNotFoundError(f"no key-encryption key at {path} (nor ${KEK_ENV}); start "
                                "`meshca serve` with this data dir first") from None
