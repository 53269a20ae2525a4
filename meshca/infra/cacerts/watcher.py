"""Reloading a plugged-in CA when its files change, without ever swapping in a broken set.

Kubernetes updates a secret volume by swapping a symlink, so a poll can observe a half-updated
set: a new set replaces the current CA only if it loads and verifies completely; otherwise the
old CA is kept and the error is recorded for status and metrics.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta
from pathlib import Path

from meshca.infra.cacerts.layout import CA_FILES, MAX_FILE_BYTES, PluggedCaError
from meshca.infra.cacerts.load import EXPIRY_WARNING, load_plugged_ca
from meshca.service.ca_ports import PluggedCa


def directory_fingerprint(directory: Path) -> str | None:
    """A cheap digest of the four files' mtime, size and content; None if none of them exist.

    A partial set still has a fingerprint (so a watcher notices it, then refuses to load it).
    """
    digest = hashlib.sha256()
    present = False
    for name in CA_FILES:
        path = directory / name
        try:
            info = os.stat(path)
        except OSError:
            digest.update(f"{name}\0absent\0".encode())
            continue
        present = True
        digest.update(f"{name}\0{info.st_mtime_ns}\0{info.st_size}\0".encode())
        try:
            with path.open("rb") as f:
                digest.update(hashlib.sha256(f.read(MAX_FILE_BYTES + 1)).digest())
        except OSError:
            digest.update(b"unreadable")
    return digest.hexdigest() if present else None


class PluggedCaWatcher:
    """Polls a cacerts directory; swaps in a new CA only when the new files load completely.

    `poll(now)` returns the newly loaded CA when the files changed and verify, else None.
    When they changed and do not verify (half-written, broken, removed), the current CA is
    kept and `last_error` says why, until a good set (or the known one) is back. A set that
    failed is tried again on every poll (it may be mid-update, or not valid yet). Poll from one
    task at a time; the watcher holds no lock.
    """

    def __init__(
        self,
        directory: Path,
        current: PluggedCa | None = None,
        *,
        expiry_warning: timedelta = EXPIRY_WARNING,
    ) -> None:
        self._directory = directory
        self._current = current
        self._expiry_warning = expiry_warning
        self._seen: str | None = None
        self._error: str | None = None
        self._error_at: datetime | None = None

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def current(self) -> PluggedCa | None:
        return self._current

    @property
    def last_error(self) -> str | None:
        return self._error

    @property
    def last_error_at(self) -> datetime | None:
        """When `last_error` was first seen (it is not re-stamped while it stays the same)."""
        return self._error_at

    def poll(self, now: datetime) -> PluggedCa | None:
        fingerprint = directory_fingerprint(self._directory)
        if fingerprint is not None and fingerprint == self._seen:
            self._clear_error()
            return None
        if fingerprint is None:
            keeping = "; keeping the loaded CA" if self._current is not None else ""
            self._record(f"no plugged-in CA files in {self._directory}{keeping}", now)
            return None
        try:
            loaded = load_plugged_ca(self._directory, now, expiry_warning=self._expiry_warning)
        except PluggedCaError as exc:
            keeping = "; keeping the loaded CA" if self._current is not None else ""
            self._record(f"{exc}{keeping}", now)
            return None
        self._seen = fingerprint
        self._clear_error()
        if self._current is not None and loaded.fingerprint == self._current.fingerprint:
            return None  # touched or re-written with the same bytes
        self._current = loaded
        return loaded

    def _record(self, message: str, now: datetime) -> None:
        if message != self._error:
            self._error, self._error_at = message, now

    def _clear_error(self) -> None:
        self._error, self._error_at = None, None
