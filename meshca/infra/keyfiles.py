"""Private keys as PEM files in the data dir, readable by the owner only (0600)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from meshca.core.keys import SigningKey

_SCHEME = "file:"


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
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key_pem(data: bytes) -> PrivateKeyTypes:
    return serialization.load_pem_private_key(data, password=None)


class FileKeyStore:
    """Keys under `<data-dir>/keys/`; locations are `file:keys/<name>.pem`, relative to the data dir."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir

    def put(self, name: str, key: SigningKey) -> str:
        relative = Path("keys") / f"{name}.pem"
        write_private_file(self._data_dir / relative, private_key_pem(key))
        return f"{_SCHEME}{relative.as_posix()}"

    def load(self, location: str) -> SigningKey:
        if not location.startswith(_SCHEME):
            raise ValueError(f"key location {location!r} is not a file location")
        path = self._data_dir / location[len(_SCHEME):]
        key = load_private_key_pem(path.read_bytes())
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"{path} does not hold an EC or RSA key")
        return key
