"""An in-memory `ProcessTable` whose processes can exit or be replaced while being read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Process:
    start_time: int
    cgroup: str


class FakeProcessTable:
    """`ProcessTable`: processes by pid. `after_cgroup_read` runs once the attestor has read a
    pid's cgroup, to exit or replace that process mid-attestation."""

    def __init__(self) -> None:
        self._procs: dict[int, _Process] = {}
        self.after_cgroup_read: Callable[[int], None] | None = None

    def spawn(self, pid: int, cgroup: str, start_time: int = 1000) -> None:
        self._procs[pid] = _Process(start_time, cgroup)

    def exit(self, pid: int) -> None:
        self._procs.pop(pid, None)

    def start_time(self, pid: int) -> int | None:
        proc = self._procs.get(pid)
        return proc.start_time if proc else None

    def cgroup(self, pid: int) -> str | None:
        proc = self._procs.get(pid)
        text = proc.cgroup if proc else None
        if self.after_cgroup_read is not None:
            self.after_cgroup_read(pid)
        return text
