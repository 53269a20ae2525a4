"""Token buckets: one that queues (callers learn how long to wait), and keyed ones that refuse.

Time is always passed in, never read, so that tests drive it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`rate` requests per second on average, `burst` at once."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if not self.rate > 0 or self.burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")

    def __str__(self) -> str:
        return f"{self.rate:g}/s, burst {self.burst}"

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """`RATE/s[:BURST]` (or /m, /h); the burst defaults to two seconds' worth."""
        rate_text, _, burst_text = text.strip().partition(":")
        number, _, unit = rate_text.partition("/")
        try:
            rate = float(number) / _PER[unit or "s"]
            burst = int(burst_text) if burst_text else max(1, round(2 * rate))
            return cls(rate, burst)
        except (ValueError, KeyError, OverflowError):
            raise ValueError(f"{text!r} is not a rate limit like 20/s:200 (RATE/s, /m or /h, "
                             "then :BURST)") from None

    @property
    def text(self) -> str:
        """As `parse` reads it: `20/s:200`."""
        return f"{self.rate:g}/s:{self.burst}"


_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def _refill(self, now: float) -> None:
        # A clock that steps back (it should not: callers pass monotonic time) adds nothing.
        self._tokens = min(self._burst, self._tokens + max(0.0, now - self._stamp) * self._rate)
        self._stamp = max(self._stamp, now)

    def reserve(self, now: float) -> float:
        """Take one token; return how many seconds the caller must wait before using it.

        Reservations are handed out in order, so waiters are served first come, first served
        and the long-run rate never exceeds `rate`.
        """
        self._refill(now)
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def take(self, now: float) -> float:
        """Take one token if there is one (0.0); otherwise take nothing and return how many
        seconds until there will be one. Refused attempts do not push that time further out."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate

    def full(self, now: float) -> bool:
        """Refilled to the burst: indistinguishable from a new bucket, so it may be dropped."""
        return self._tokens + max(0.0, now - self._stamp) * self._rate >= self._burst


class KeyedLimiter:
    """A refusing token bucket per key (a client address, an identity), in bounded memory.

    Buckets idle long enough to have refilled are dropped (they equal a new one). If more than
    `max_keys` keys are active at once, the least recently used bucket is dropped: only a
    caller spraying that many keys gains from it, and then only a fresh burst per key.
    """

    def __init__(self, limit: RateLimit, *, max_keys: int = 50_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.limit = limit
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.evicted = 0  # active buckets dropped to stay within max_keys

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, key: str, now: float) -> float:
        """0.0 when `key` may go ahead (a token is taken); else the seconds until it may."""
        bucket = self._buckets.get(key)
        if bucket is None:
            self._sweep(now)
            bucket = self._buckets[key] = TokenBucket(self.limit.rate, self.limit.burst, now)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)

    def _sweep(self, now: float) -> None:
        """Before adding a key: drop refilled buckets from the least recent end (amortised
        O(1): each bucket is dropped once), then the least recent if still full."""
        buckets = self._buckets
        while buckets:
            oldest = next(iter(buckets.values()))
            if not oldest.full(now):
                break
            buckets.popitem(last=False)
        while len(buckets) >= self._max_keys:
            buckets.popitem(last=False)
            self.evicted += 1
