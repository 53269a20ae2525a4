"""Refused callers, summarised: one audit row per (source, action, target, reason) per interval.

One row per refused request let a caller with no credential at all write to the audit log as
fast as it could send (over a thousand rows a second). Refusals are tallied in memory instead
and written once per interval, each row saying how many, why, and the first and last time.
The number of distinct keys per interval is capped: past it, refusals are counted into one
overflow row, so neither memory nor the audit log grows with the number of sources an
attacker can spray from. Successful impersonations and admin mutations are not refusals and
stay one row each.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from meshca.service.pause import pause
from meshca.service.ports import AuditEntry

log = logging.getLogger(__name__)
DEFAULT_MAX_KEYS = 1000
OVERFLOW_ACTOR = "(other sources)"
OVERFLOW_ACTION = "refusals.overflow"
# Caps on what one key may hold, so that the memory per key is bounded too.
_MAX_SOURCE, _MAX_TARGET, _MAX_REASON = 128, 512, 256


@dataclass(slots=True)
class _Tally:
    count: int
    first: datetime
    last: datetime

    def add(self, at: datetime) -> None:
        self.count += 1
        self.first, self.last = min(self.first, at), max(self.last, at)


def source_address(peer: str) -> str:
    """`host:port` (or `[v6]:port`) → host: a client reconnecting from a new port is the same
    source. Anything else is kept as it is."""
    host, sep, port = peer.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return peer
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


class RefusalSummary:
    """Thread-safe: the admin API reports refusals from worker threads."""

    def __init__(self, *, counted: Callable[[str], None] = lambda _: None,
                 max_keys: int = DEFAULT_MAX_KEYS) -> None:
        """`counted(code)` runs for every refusal (the metric); `code` is a short fixed reason."""
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._counted = counted
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._tallies: dict[tuple[str, str, str, str], _Tally] = {}
        self._overflow: _Tally | None = None

    def add(self, at: datetime, *, source: str, action: str, reason: str, target: str = "",
            code: str = "invalid") -> None:
        key = (_clip(source, _MAX_SOURCE), action, _clip(target, _MAX_TARGET),
               _clip(reason, _MAX_REASON))
        with self._lock:
            self._counted(code)
            tally = self._tallies.get(key)
            if tally is not None:
                tally.add(at)
            elif len(self._tallies) < self._max_keys:
                self._tallies[key] = _Tally(1, at, at)
            elif self._overflow is None:
                self._overflow = _Tally(1, at, at)
            else:
                self._overflow.add(at)

    def take(self) -> list[AuditEntry]:
        """The summary rows since the last take (oldest key first), and start afresh."""
        with self._lock:
            tallies, self._tallies = self._tallies, {}
            overflow, self._overflow = self._overflow, None
        entries = [AuditEntry(at=t.first, actor=source, action=action, target=target,
                              outcome="refused", detail=_detail(t, reason))
                   for (source, action, target, reason), t in tallies.items()]
        if overflow is not None:
            entries.append(AuditEntry(
                at=overflow.first, actor=OVERFLOW_ACTOR, action=OVERFLOW_ACTION, target="",
                outcome="refused", detail=_detail(overflow, f"from sources and reasons beyond the "
                                                  f"{self._max_keys} itemised per interval")))
        return entries

    async def flush_every(self, interval: float,
                          write: Callable[[list[AuditEntry]], Awaitable[None]],
                          stop: asyncio.Event) -> None:
        """Write the summaries every `interval` seconds until `stop`. The last interval's rows
        are the owner's to write (`take`) once nothing can be refused any more."""
        never = asyncio.Event()
        while not stop.is_set():
            await pause(stop, never, interval)
            entries = self.take()
            if not entries:
                continue
            try:
                await write(entries)
            except Exception:  # the loop must outlive a database that is away
                log.exception("could not write %d refusal summaries to the audit log",
                              len(entries))


def _detail(tally: _Tally, reason: str) -> str:
    times = (f"at {_stamp(tally.first)}" if tally.count == 1
             else f"first {_stamp(tally.first)}, last {_stamp(tally.last)}")
    return f"{tally.count} refusal{'s' * (tally.count != 1)}: {reason} ({times})"
