"""Validated tokens, remembered: thousands of sidecars per second without re-validating each.

- A token that validated maps to its identity until min(its exp, the cache TTL).
- A token that failed is refused from memory for a few seconds (negative cache), so a
  misconfigured sidecar retrying in a loop does not reach the API server every time.
- Concurrent validations of one token coalesce into one.
- Bounded: least recently used entries go first.
Keys are SHA-256 digests: the cache never holds a usable token.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from meshca.core.sa_token import ServiceAccount
from meshca.errors import AuthenticationError
from meshca.service.ports import AuthMetrics


@dataclass(frozen=True, slots=True)
class CacheSettings:
    ttl_seconds: float = 300.0
    max_entries: int = 100_000
    negative_ttl_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class _Refusal:
    message: str
    reason: str
    until: float


class CachingAuthenticator:
    def __init__(
        self,
        validate: Callable[[str], Awaitable[ServiceAccount]],
        settings: CacheSettings,
        now: Callable[[], float],
        metrics: AuthMetrics,
    ) -> None:
        self._validate = validate
        self._settings = settings
        self._now = now
        self._good: OrderedDict[bytes, tuple[ServiceAccount, float]] = OrderedDict()
        self._bad: OrderedDict[bytes, _Refusal] = OrderedDict()
        self._in_flight: dict[bytes, asyncio.Task[ServiceAccount]] = {}
        self._metrics = metrics

    async def authenticate(self, token: str) -> ServiceAccount:
        key = hashlib.sha256(token.encode()).digest()
        now = self._now()
        cached = self._good.get(key)
        if cached is not None:
            account, until = cached
            if now < until:
                self._good.move_to_end(key)
                self._metrics.token_cache("hit")
                return account
            del self._good[key]
        refused = self._bad.get(key)
        if refused is not None:
            if now < refused.until:
                self._metrics.token_cache("negative_hit")
                raise AuthenticationError(refused.message, reason=refused.reason)
            del self._bad[key]
        pending = self._in_flight.get(key)
        if pending is not None:
            self._metrics.token_cache("coalesced")
        else:
            self._metrics.token_cache("miss")
            # The check runs as its own task: a caller that gives up (deadline, disconnect)
            # cancels only its own wait, never the check the others are waiting on.
            pending = asyncio.get_running_loop().create_task(self._check(key, token))
            pending.add_done_callback(_retrieve)  # no "never retrieved" noise if all gave up
            self._in_flight[key] = pending
        return await asyncio.shield(pending)

    async def _check(self, key: bytes, token: str) -> ServiceAccount:
        try:
            account = await self._validate(token)
        except AuthenticationError as exc:
            self._remember_refusal(key, exc)
            raise
        else:
            self._remember(key, account)
            return account
        finally:
            del self._in_flight[key]

    def _remember(self, key: bytes, account: ServiceAccount) -> None:
        until = self._now() + self._settings.ttl_seconds
        if account.expires_at is not None:
            until = min(until, float(account.expires_at))
        self._good[key] = (account, until)
        while len(self._good) > self._settings.max_entries:
            self._good.popitem(last=False)

    def _remember_refusal(self, key: bytes, exc: AuthenticationError) -> None:
        if not exc.cacheable:
            return  # e.g. the API server was down: the next call should try again
        self._bad[key] = _Refusal(str(exc), exc.reason,
                                  self._now() + self._settings.negative_ttl_seconds)
        while len(self._bad) > self._settings.max_entries:
            self._bad.popitem(last=False)

    def __len__(self) -> int:
        return len(self._good)


def _retrieve(task: asyncio.Task[ServiceAccount]) -> None:
    if not task.cancelled():
        task.exception()
