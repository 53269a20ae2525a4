"""Issuance rate limits: per client address before authentication, per identity after.

The per-source limit runs first and costs a dictionary look-up, so a flood is turned away
before any token is verified (or sent to an API server in a TokenReview). The per-identity
limit keeps one workload (or one stolen token) from starving the others. Both are token
buckets held in each worker process: with N workers and R replicas a client may get up to
N*R times the rate, but one connection always lands on one worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from meshca.core.rate_limit import KeyedLimiter, RateLimit
from meshca.errors import RateLimited


class IssuanceRateLimits:
    def __init__(self, per_source: RateLimit | None, per_identity: RateLimit | None, *,
                 monotonic: Callable[[], float] = time.monotonic, max_keys: int = 50_000) -> None:
        """None turns a limit off."""
        self._source = KeyedLimiter(per_source, max_keys=max_keys) if per_source else None
        self._identity = KeyedLimiter(per_identity, max_keys=max_keys) if per_identity else None
        self._monotonic = monotonic

    def check_source(self, address: str) -> None:
        if self._source is None:
            return
        wait = self._source.check(address, self._monotonic())
        if wait > 0:
            raise RateLimited(
                f"too many requests from {address}: the per-source issuance limit is "
                f"{self._source.limit} per server process (--issuance-rate-per-source); "
                f"retry in {wait:.3f}s", retry_after=wait, limit="source")

    def check_identity(self, spiffe_id: str) -> None:
        if self._identity is None:
            return
        wait = self._identity.check(spiffe_id, self._monotonic())
        if wait > 0:
            raise RateLimited(
                f"too many certificates requested for {spiffe_id}: the per-identity issuance "
                f"limit is {self._identity.limit} per server process "
                f"(--issuance-rate-per-identity); retry in {wait:.3f}s",
                retry_after=wait, limit="identity")
