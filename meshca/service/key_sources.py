"""Where an issuer's public keys come from: fixed at start-up, or discovered and refreshed.

A discovered source refetches on an unknown `kid` (keys rotate), at most once per
`min_refetch_seconds`, and again every `refresh_seconds` in the background. When no keys can
be had, it has none, so every token is refused: it fails closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from meshca.core.jwks import parse_jwks
from meshca.core.jwt import VerificationKey

log = logging.getLogger(__name__)


class KeySource(Protocol):
    def issuer(self) -> str | None: ...

    def keys(self) -> Mapping[str, VerificationKey]: ...

    async def refresh(self) -> bool:
        """Try to fetch newer keys now; False when not allowed yet or it failed."""
        ...


class StaticKeySource:
    def __init__(self, issuer: str, keys: Mapping[str, VerificationKey]) -> None:
        self._issuer = issuer
        self._keys = dict(keys)

    def issuer(self) -> str | None:
        return self._issuer

    def keys(self) -> Mapping[str, VerificationKey]:
        return self._keys

    async def refresh(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class Discovery:
    issuer: str
    jwks: dict[str, Any]


class DiscoveredKeySource:
    def __init__(self, fetch: Callable[[], Discovery], *, expected_issuer: str | None = None,
                 min_refetch_seconds: float = 10.0, refresh_seconds: float = 300.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._expected_issuer = expected_issuer
        self._min_refetch = min_refetch_seconds
        self._refresh_every = refresh_seconds
        self._monotonic = monotonic
        self._issuer: str | None = None
        self._keys: dict[str, VerificationKey] = {}
        self._last_attempt: float | None = None
        self._lock = asyncio.Lock()

    def issuer(self) -> str | None:
        return self._issuer

    def keys(self) -> Mapping[str, VerificationKey]:
        return self._keys

    async def refresh(self) -> bool:
        async with self._lock:  # concurrent unknown-kid tokens share one fetch
            now = self._monotonic()
            if self._last_attempt is not None and now - self._last_attempt < self._min_refetch:
                return False
            self._last_attempt = now
            try:
                found = await asyncio.get_running_loop().run_in_executor(None, self._fetch)
                keys = parse_jwks(found.jwks)
            except Exception as exc:  # noqa: BLE001 - any failure keeps the old keys; none = fail closed
                log.warning("could not fetch the token issuer's keys: %s", exc)
                return False
            if self._expected_issuer is not None and found.issuer != self._expected_issuer:
                log.error("discovery document names issuer %r, expected %r; keys not used",
                          found.issuer, self._expected_issuer)
                return False
            self._issuer, self._keys = found.issuer, keys
            log.info("token issuer %s: %d signing keys", found.issuer, len(keys))
            return True

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh in the background until `stop` is set."""
        while not stop.is_set():
            await self.refresh()
            delay = self._refresh_every if self._keys else self._min_refetch
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass
