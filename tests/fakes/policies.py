"""In-memory `StoredPolicies` (service/ca_ports.py): a version that grows with each change."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from meshca.errors import StoreUnavailable
from meshca.service.ca_ports import StoredPolicy


class FakeStoredPolicies:
    def __init__(self) -> None:
        self._version = 0
        self._rows: dict[tuple[str, str], StoredPolicy] = {}
        self.down = False
        self.polls = 0  # calls, failed ones included

    def put(self, namespace: str, name: str, document: dict[str, Any]) -> None:
        self._version += 1
        self._rows[namespace, name] = StoredPolicy(namespace, name, self._version, document,
                                                   "test", datetime.now(UTC))

    def version(self) -> int:
        self._check()
        return self._version

    def all(self) -> tuple[int, list[StoredPolicy]]:
        self._check()
        return self._version, [self._rows[k] for k in sorted(self._rows)]

    def _check(self) -> None:
        self.polls += 1
        if self.down:
            raise StoreUnavailable("authorization policies: the database did not answer")
