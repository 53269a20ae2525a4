"""An `AuthzMetrics` (transport/ext_authz/reasons.py) that records every ext_authz decision."""

from __future__ import annotations


class FakeAuthzMetrics:
    def __init__(self) -> None:
        self.decisions: list[tuple[str, str]] = []  # (decision, reason)

    def authz_decision(self, decision: str, reason: str) -> None:
        self.decisions.append((decision, reason))

    def identity_refresh(self, outcome: str) -> None:
        pass

    def identity_state_read(self, wall_time: float | None) -> None:
        pass
