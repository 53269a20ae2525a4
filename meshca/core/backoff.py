"""Per-source back-off after failed authentications: guessing admin tokens gets slow.

A source that has failed `allowed` times in a row must wait `first` seconds, and the
wait doubles with every further failure up to `longest`. A success forgets the source. Time is
passed in (monotonic seconds), never read; memory is bounded by `max_sources` (the oldest
entries go first, so an attacker spraying addresses cannot grow it).
"""

from __future__ import annotations

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
