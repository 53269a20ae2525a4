"""The keystore's part of the settings (config.py stays free of service modules)."""

from __future__ import annotations

import dataclasses
from typing import Any

from meshca.config import Settings
from meshca.keystore_settings import KeystoreSettings


def keystore_settings(settings: Settings) -> KeystoreSettings:
    """Every KeystoreSettings field that Settings has, by name; the KEK at its resolved path."""
    values: dict[str, Any] = {f.name: getattr(settings, f.name)
                              for f in dataclasses.fields(KeystoreSettings) if hasattr(settings, f.name)}
    values["kek_file"] = settings.kek_path
    return KeystoreSettings(**values)
