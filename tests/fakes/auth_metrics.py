"""An `AuthMetrics` (service/ports.py) that counts what token authentication reports."""

from __future__ import annotations

from collections import Counter


class FakeAuthMetrics:
    def __init__(self) -> None:
        self.cache: Counter[str] = Counter()  # "hit", "miss", "negative_hit", "coalesced"
        self.kube: Counter[tuple[str, bool]] = Counter()  # (kind, ok)

    def token_cache(self, outcome: str) -> None:
        self.cache[outcome] += 1

    def kube_call(self, kind: str, seconds: float, ok: bool) -> None:
        self.kube[(kind, ok)] += 1
