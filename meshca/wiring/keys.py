"""The key store and key-encryption key every process of one server uses."""

from __future__ import annotations

from meshca.config import Settings
from meshca.infra.keyfiles import FileKeyStore, KeyEncryptionKey
from meshca.service.ports import KeyStore


def key_encryption_key(settings: Settings) -> KeyEncryptionKey:
    return KeyEncryptionKey.load_or_create(settings.kek_path, settings.data_dir)


def key_store(settings: Settings) -> KeyStore:
    return FileKeyStore(settings.key_dir or settings.data_dir, key_encryption_key(settings))
