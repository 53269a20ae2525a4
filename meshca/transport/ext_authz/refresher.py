"""The identity state ext_authz decides from, re-read in the background.

A daemon thread reads it every `interval` seconds and swaps in the new snapshot (one
reference). A read that fails keeps the last snapshot; one that hangs (a locked database)
holds up only this thread, never a check, and the snapshot simply ages until checks deny it
as stale. Daemon, so that a read stuck in the database never keeps the process alive.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from meshca.transport.ext_authz import reasons
from meshca.transport.ext_authz.identity import IdentityState

log = logging.getLogger(__name__)


class IdentityRefresher:
    def __init__(self, read: Callable[[float], IdentityState], interval: float,
                 metrics: reasons.AuthzMetrics | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        """`read(started)` returns the state as read now, stamped `started` (monotonic)."""
        self._read = read
        self._interval = interval
        self._metrics = metrics or reasons.NoMetrics()
        self._clock = clock
        self._wall = wall
        self.state: IdentityState | None = None
        self._first = threading.Event()
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="ext-authz-identity", daemon=True)

    def start(self) -> None:
        self._metrics.identity_state_read(None)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def wait_first(self, timeout: float) -> bool:
        """Blocking: True once a snapshot is there, False after `timeout` seconds."""
        return self._first.wait(timeout)

    def refresh(self) -> bool:
        """One read (blocking); False when it failed and the last snapshot stays."""
        started, started_wall = self._clock(), self._wall()
        try:
            state = self._read(started)
        except Exception as exc:  # the thread must outlive any failure, and say so once
            level = logging.DEBUG if self._failing else logging.WARNING
            log.log(level, "ext_authz: reading blocked identities and revoked certificates "
                    "failed after %.1fs, keeping the last snapshot: %s: %s",
                    self._clock() - started, type(exc).__name__, exc,
                    exc_info=log.isEnabledFor(logging.DEBUG))
            self._failing = True
            self._metrics.identity_refresh("failed")
            return False
        took = self._clock() - started
        self.state = state
        self._metrics.identity_state_read(started_wall)
        self._first.set()
        if took > self._interval:
            log.warning("ext_authz: reading the identity state took %.1fs, longer than the "
                        "refresh interval (%gs): is the database slow or locked?",
                        took, self._interval)
        elif self._failing:
            log.info("ext_authz: the identity state is read again")
        self._failing = False
        self._metrics.identity_refresh("slow" if took > self._interval else "ok")
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self._interval)
