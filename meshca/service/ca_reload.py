"""Each process's current CA, reloaded when the journal (or the plugged-in files) change.

Every worker and the supervisor poll their `CaSource` every `--ca-reload-interval`; the
rotator wakes its own process at once. A reload that fails (database briefly unreachable, a
root switch caught half-way) keeps the current authority and is tried again next time: a
process never stops signing because it could not see a change.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

from meshca.core.authority import SigningAuthority
from meshca.core.jwt_signing import JwtKeySet
from meshca.core.remote_signing import SignerUnavailable
from meshca.errors import MeshcaError
from meshca.service.ca_source import CaSource
from meshca.service.pause import pause

log = logging.getLogger(__name__)
Listener = Callable[[SigningAuthority], None]


class CaReloader:
    def __init__(self, source: CaSource, *, watch_files: Sequence[Path] = ()) -> None:
        """Loads the current authority now (blocking); `watch_files` also count as a change
        (meshca's serving certificate, rewritten by the supervisor)."""
        self._source = source
        self._files = tuple(watch_files)
        self._version = self._observe()
        self._loaded = source.load()
        self._listeners: list[Listener] = []
        self._wake = asyncio.Event()
        self._failing = False

    @property
    def source(self) -> CaSource:
        return self._source

    @property
    def current(self) -> SigningAuthority:
        return self._loaded.authority

    @property
    def jwt_keys(self) -> JwtKeySet:
        """The JWT-SVID key that signs, and the JWT keys in the bundle (loaded with the CA)."""
        return self._loaded.jwt

    @property
    def sequence(self) -> int:
        """`spiffe_sequence` of the current bundle."""
        return self._loaded.sequence

    def add_listener(self, listener: Listener) -> None:
        """Called on the event loop's thread after every change, with the new authority."""
        self._listeners.append(listener)

    def wake(self) -> None:
        """Check now (from the event loop's thread)."""
        self._wake.set()

    def refresh(self) -> SigningAuthority | None:
        """Blocking: the new authority when something changed, else None."""
        version = self._observe()
        if version == self._version:
            return None
        loaded = self._source.load()
        self._version, self._loaded = version, loaded
        return loaded.authority

    async def refresh_now(self) -> bool:
        """Refresh and tell the listeners; False when nothing changed."""
        authority = await asyncio.to_thread(self.refresh)
        if authority is None:
            return False
        for listener in self._listeners:
            try:
                listener(authority)
            except Exception:  # one broken consumer must not stop the others from reloading
                log.exception("CA reload: a listener failed")
        return True

    async def run(self, stop: asyncio.Event, interval_seconds: float) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                if await self.refresh_now():
                    log.info("CA reloaded: signing generation %d, %d root(s) in the bundle",
                             self.current.generation_id, len(self.current.bundle.roots))
                if self._failing:
                    log.info("CA reload works again")
                self._failing = False
            except (MeshcaError, OSError, ValueError, RuntimeError, SignerUnavailable) as exc:
                level = logging.DEBUG if self._failing else logging.WARNING
                log.log(level, "CA reload failed, keeping generation %d: %s",
                        self.current.generation_id, exc)
                self._failing = True
            retry = min(interval_seconds, 1.0) if self._failing else interval_seconds
            await pause(stop, self._wake, retry)

    def _observe(self) -> Hashable:
        return (self._source.version(), tuple(_stat(path) for path in self._files))


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
