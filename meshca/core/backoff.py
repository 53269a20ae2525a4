"""Back-off, two kinds.

`FailureBackoff`: per-source back-off after failed authentications: guessing admin tokens
gets slow. A source that has failed `allowed` times in a row must wait `first` seconds, and the
wait doubles with every further failure up to `longest`. A success forgets the source. Time is
passed in (monotonic seconds), never read; memory is bounded by `max_sources` (the oldest
entries go first, so an attacker spraying addresses cannot grow it).

`ExponentialBackoff`: the waits between retries of one call to a server that is down (the
agent's renewals and bundle fetches), doubling with full jitter.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class _Failures:
    count: int
    until: float  # refused before this time


class FailureBackoff:
    def __init__(self, allowed: int, first: float, longest: float = 900.0,
                 max_sources: int = 100_000) -> None:
        if allowed < 1 or first <= 0 or longest < first or max_sources < 1:
            raise ValueError("back-off needs allowed >= 1 and 0 < first <= longest")
        self._allowed = allowed
        self._first = first
        self._longest = longest
        self._max = max_sources
        self._sources: OrderedDict[str, _Failures] = OrderedDict()

    def wait(self, source: str, now: float) -> float:
        """Seconds `source` must still wait before it may try again (0: it may)."""
        entry = self._sources.get(source)
        return max(0.0, entry.until - now) if entry else 0.0

    def failed(self, source: str, now: float) -> float:
        """Count a failure; return the wait it now owes (0 while under the allowance)."""
        entry = self._sources.pop(source, None) or _Failures(0, 0.0)
        entry.count += 1
        over = entry.count - self._allowed
        if over >= 0:
            entry.until = now + min(self._longest, self._first * 2 ** min(over, 30))
        self._sources[source] = entry
        while len(self._sources) > self._max:
            self._sources.popitem(last=False)
        return max(0.0, entry.until - now)

    def succeeded(self, source: str) -> None:
        self._sources.pop(source, None)


class ExponentialBackoff:
    """Waits between retries of one failing call: `first` seconds doubling up to `longest`,
    with full jitter (each wait uniform in (0, ceiling]) so that many clients a failure hit at
    once do not retry at once. `floor` keeps a wait from being zero (no hot loop)."""

    def __init__(self, first: float = 1.0, longest: float = 60.0, *,
                 rng: random.Random | None = None, floor: float = 0.05) -> None:
        if first <= 0 or longest < first or not 0 <= floor <= first:
            raise ValueError("back-off needs 0 < first <= longest and 0 <= floor <= first")
        self._first = first
        self._longest = longest
        self._floor = floor
        self._rng = rng or random.Random()  # jitter, not a secret
        self.failures = 0

    @property
    def ceiling(self) -> float:
        """The longest wait the next failure may owe."""
        return min(self._longest, self._first * 2.0 ** min(self.failures, 30))

    def failed(self) -> float:
        """Count a failure; return how long to wait before the next try."""
        wait = max(self._floor, self.ceiling * self._rng.random())
        self.failures += 1
        return wait

    def reset(self) -> None:
        self.failures = 0
