"""Who holds a lease, and whether that holder is provably gone.

A lease outlives a holder killed with `kill -9` until its TTL runs out (a minute for the
rotator). A restart of the same replica would then wait that minute with nothing rotating: with
a short intermediate, long enough to serve an expired CA. So a holder names its host, the
kernel's boot, its pid and the pid's start time, and a replica may take over at once a lease
whose holder ran on this very host since the same boot and is no longer running: that process
cannot write again, so nothing it does can race the successor (fencing would refuse it anyway).

Anything that cannot be proven (another host, another boot, an unreadable /proc, a holder
written in an older form) is never reclaimed: the lease then simply expires, as before.

It assumes that a host name names one replica at a time on a machine, as a pod's name does (a
restarted container keeps it, in a new pid namespace: that is the restart this serves). Two
replicas given the same host name on one machine in separate pid namespaces would each see the
other as gone; fencing still refuses the writes of the one that lost the lease.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["is_gone", "this_process"]

_PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class _Holder:
    host: str
    pid: int
    boot: str
    started: str

    def render(self) -> str:
        return f"{self.host}/{self.pid}/{self.boot}:{self.started}"


def _boot_id(proc: Path) -> str | None:
    try:
        return (proc / "sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:12] or None
    except OSError:
        return None


def _start_time(proc: Path, pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot): with the pid, unique per boot."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the command name may hold spaces and parens
    return fields[19] if len(fields) > 19 else None


def this_process(proc: Path = _PROC) -> str:
    """This process as a lease holder: `host/pid/boot:start`, or `host/pid` without /proc."""
    host, pid = socket.gethostname(), os.getpid()
    boot, started = _boot_id(proc), _start_time(proc, pid)
    if boot is None or started is None:
        return f"{host}/{pid}"
    return _Holder(host, pid, boot, started).render()


def _parse(holder: str) -> _Holder | None:
    host, _, rest = holder.partition("/")
    pid, _, stamp = rest.partition("/")
    boot, _, started = stamp.partition(":")
    if not (host and pid.isdigit() and boot and started.isdigit()):
        return None
    return _Holder(host, int(pid), boot, started)


def is_gone(holder: str, proc: Path = _PROC) -> bool:
    """True only when `holder` ran on this host since this boot and that process has ended."""
    parsed = _parse(holder)
    if parsed is None or parsed.host != socket.gethostname() or parsed.boot != _boot_id(proc):
        return False
    try:
        os.kill(parsed.pid, 0)  # unaffected by /proc's hidepid, unlike reading /proc/PID
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, under another user: its start time tells whether it is the holder
    started = _start_time(proc, parsed.pid)
    return started is not None and started != parsed.started  # the pid was reused
