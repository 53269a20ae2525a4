"""Is Vault there? Readiness, the alert gauge and retry-with-backoff for Vault calls.

`ready` turns true at the first successful call and stays true: once the signing CA is
loaded, issuance can go on without Vault, while rotation (which needs Vault) waits and the
alert is raised. `alert` is 1 when Vault has been failing for longer than `alert_after`
seconds, or a rotation is waiting for it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class VaultHealth:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic, alert_after: float = 30.0) -> None:
        self._clock = clock
        self._alert_after = alert_after
        self._lock = threading.Lock()
        self._ready = False
        self._failing_since: float | None = None
        self._rotation_waiting = False
        self.last_error: str | None = None  # a VaultError message: never secrets

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def reachable(self) -> bool:
        return self._ready and self._failing_since is None

    @property
    def alert(self) -> float:
        with self._lock:
            if self._rotation_waiting:
                return 1.0
            if self._failing_since is None:
                return 0.0
            return 1.0 if self._clock() - self._failing_since >= self._alert_after else 0.0

    def succeeded(self) -> None:
        with self._lock:
            self._ready = True
            self._failing_since = None
            self.last_error = None

    def failed(self, error: Exception) -> None:
        with self._lock:
            if self._failing_since is None:
                self._failing_since = self._clock()
            self.last_error = str(error)

    def rotation_waiting(self, waiting: bool) -> None:
        """Set by the rotation loop while a due rotation cannot reach Vault."""
        with self._lock:
            self._rotation_waiting = waiting


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2  # ± this fraction, so replicas do not retry in step

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay * (1 + random.uniform(-self.jitter, self.jitter))
            delay = min(delay * self.factor, self.maximum)


def retry_with_backoff(fn: Callable[[], T], *, retry_on: tuple[type[Exception], ...],
                       backoff: Backoff = Backoff(), give_up_after: float | None = None,
                       stop: threading.Event | None = None,
                       clock: Callable[[], float] = time.monotonic,
                       sleep: Callable[[float], None] = time.sleep) -> T:
    """`fn()` until it does not raise one of `retry_on`; re-raise after `give_up_after` s or `stop`."""
    started = clock()
    for delay in backoff.delays():
        try:
            return fn()
        except retry_on:
            out_of_time = give_up_after is not None and clock() + delay - started > give_up_after
            if out_of_time or (stop is not None and stop.is_set()):
                raise
        if stop is not None:
            if stop.wait(delay):
                raise TimeoutError("stopped while waiting for Vault")
        else:
            sleep(delay)
    raise AssertionError("unreachable")
