"""Calls to one Kubernetes API server: rate-limited, off the event loop, measured.

The client-side limit queues callers (like client-go's QPS/burst) rather than failing them,
and a 429 is retried after the server's Retry-After, a few times, before giving up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import TypeVar

from meshca.core.rate_limit import TokenBucket
from meshca.service.ports import AuthMetrics, KubeApiError, KubeApiPort

T = TypeVar("T")
_MAX_RETRY_AFTER = 5.0
_ATTEMPTS = 3


class KubeCalls:
    def __init__(self, api: KubeApiPort, *, qps: float, burst: int, pool: Executor,
                 metrics: AuthMetrics, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """`monotonic` and `sleep` are the clock the limit and the 429 retries wait on."""
        self.api = api
        self._bucket = TokenBucket(qps, burst, monotonic())
        self._pool = pool
        self._metrics = metrics
        self._monotonic = monotonic
        self._sleep = sleep

    async def call(self, kind: str, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        for attempt in range(_ATTEMPTS):
            wait = self._bucket.reserve(self._monotonic())
            if wait > 0:
                await self._sleep(wait)
            started = time.perf_counter()
            try:
                result = await loop.run_in_executor(self._pool, fn)
            except KubeApiError as exc:
                self._metrics.kube_call(kind, time.perf_counter() - started, ok=False)
                if exc.status == 429 and attempt + 1 < _ATTEMPTS:
                    await self._sleep(min(exc.retry_after or 1.0, _MAX_RETRY_AFTER))
                    continue
                raise
            self._metrics.kube_call(kind, time.perf_counter() - started, ok=True)
            return result
        raise AssertionError("unreachable")  # pragma: no cover
