"""A token bucket that queues: callers learn how long to wait instead of being refused."""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up. Time is passed in, never read."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def reserve(self, now: float) -> float:
        """Take one token; return how many seconds the caller must wait before using it.

        Reservations are handed out in order, so waiters are served first come, first served
        and the long-run rate never exceeds `rate`.
        """
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate
