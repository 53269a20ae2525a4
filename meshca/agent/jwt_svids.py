"""The agent's JWT-SVIDs: minted by the server on demand, cached per identity and audience set.

- A JWT-SVID is served from the cache until half its lifetime (counted from when it arrived)
  has passed; after that the next request mints a new one. A workload asking on every request
  so costs the server one mint per half-life, not one per request.
- Concurrent requests for the same identity and audience set share one mint.
- The cache holds at most `max_entries` tokens; the least recently used goes first (audiences
  are the workload's to choose, so their number is not).
- Nothing is retried here: a failure reaches the caller (UNAVAILABLE or PERMISSION_DENIED), and
  SPIFFE clients ask again. Failures are not cached.
- The JWT bundles are the SVID cache's (`JwtBundles`), which follows the server's bundles.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from meshca.agent.metrics import AgentMetrics
from meshca.agent.ports import Identity, JwtBundles, JwtBundleSet, JwtMinter, JwtSvid
from meshca.core.spiffe import SpiffeId
from meshca.errors import PermissionDenied, Unavailable

log = logging.getLogger(__name__)

DEFAULT_MAX_ENTRIES = 4096
MAX_AUDIENCES = 16  # the spec advises one; a handful is plenty
MAX_AUDIENCE_LENGTH = 1024
_Key = tuple[SpiffeId, frozenset[str]]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class _Cached:
    svid: JwtSvid
    refresh_at: datetime


def check_audience(audience: tuple[str, ...]) -> tuple[str, ...]:
    """The audience without repeats, in the caller's order; ValueError says what is wrong."""
    if not audience:
        raise ValueError("audience is required")
    if len(audience) > MAX_AUDIENCES:
        raise ValueError(f"at most {MAX_AUDIENCES} audiences")
    for value in audience:
        if not value or len(value) > MAX_AUDIENCE_LENGTH:
            raise ValueError(f"each audience must be 1 to {MAX_AUDIENCE_LENGTH} characters")
    return tuple(dict.fromkeys(audience))


class JwtSvidCache:
    """`JwtSvids` over a `JwtMinter` and the `JwtBundles` of the SVID cache."""

    def __init__(self, minter: JwtMinter, bundles: JwtBundles, *, trust_domain: str,
                 ttl: timedelta | None = None, max_entries: int = DEFAULT_MAX_ENTRIES,
                 metrics: AgentMetrics | None = None,
                 now: Callable[[], datetime] = _utcnow) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        SpiffeId.for_trust_domain(trust_domain)  # ValueError names what is wrong
        self._minter = minter
        self._bundles = bundles
        self._trust_domain = trust_domain
        self._ttl = ttl
        self._max_entries = max_entries
        self._metrics = metrics
        self._now = now
        self._cache: OrderedDict[_Key, _Cached] = OrderedDict()
        self._pending: dict[_Key, asyncio.Task[JwtSvid]] = {}

    def __len__(self) -> int:
        return len(self._cache)

    async def fetch(self, identity: Identity, audience: tuple[str, ...]) -> JwtSvid:
        spiffe_id = identity.spiffe_id
        audience = check_audience(audience)
        if spiffe_id.trust_domain != self._trust_domain:
            raise PermissionDenied(f"{spiffe_id} is not in the trust domain "
                                   f"{self._trust_domain}")
        key = (spiffe_id, frozenset(audience))
        cached = self._cache.get(key)
        if cached is not None and self._now() < cached.refresh_at:
            self._cache.move_to_end(key)
            return cached.svid
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(self._mint(key, audience), name=f"jwt-svid {spiffe_id}")
            # Read the outcome even when every caller gave up, so asyncio does not complain.
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._pending[key] = task
        # Shielded: one caller giving up must not cancel the mint the others wait for.
        return await asyncio.shield(task)

    async def _mint(self, key: _Key, audience: tuple[str, ...]) -> JwtSvid:
        spiffe_id = key[0]
        try:
            svid = await self._minter.mint(spiffe_id, audience, self._ttl)
        except (Unavailable, PermissionDenied) as exc:
            self._count("refused" if isinstance(exc, PermissionDenied) else "unavailable")
            log.warning("no JWT-SVID for %s: %s", spiffe_id, exc)
            raise
        except Exception as exc:
            self._count("unavailable")
            log.exception("minting a JWT-SVID for %s failed unexpectedly", spiffe_id)
            raise Unavailable(f"unexpected {type(exc).__name__}") from None
        finally:
            self._pending.pop(key, None)
        self._count("ok")
        now = self._now()
        if svid.expiry > now:  # a token that is expired on arrival is served once, not kept
            self._cache[key] = _Cached(svid, now + (svid.expiry - now) / 2)
            self._cache.move_to_end(key)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        log.debug("JWT-SVID for %s minted, valid until %s", spiffe_id,
                  svid.expiry.isoformat(timespec="seconds"))
        return svid

    def jwt_bundles(self) -> JwtBundleSet:
        return self._bundles.jwt_bundles()

    def watch_jwt_bundles(self) -> AsyncIterator[JwtBundleSet]:
        return self._bundles.watch_jwt_bundles()

    async def stop(self) -> None:
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._cache.clear()

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.jwt_mints.labels(outcome).inc()
