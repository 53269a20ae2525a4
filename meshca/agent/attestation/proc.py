"""The process table read from a proc file system (`--proc-root`, `/proc` on a node)."""

from __future__ import annotations

from pathlib import Path

from meshca.agent.attestation.ports import AttestationRefused

# `stat` is "pid (comm) state ppid ...": comm may hold spaces and ')', so fields are counted
# from the last ')'. starttime is field 22, the 20th after comm.
_START_TIME_AFTER_COMM = 19
_MAX_FILE = 64 * 1024


class ProcFs:
    """`ProcessTable` over `<root>/<pid>/{stat,cgroup}`."""

    def __init__(self, root: str | Path = "/proc") -> None:
        self._root = Path(root)

    def start_time(self, pid: int) -> int | None:
        text = self._read(pid, "stat")
        if text is None:
            return None
        return parse_start_time(text)

    def cgroup(self, pid: int) -> str | None:
        return self._read(pid, "cgroup")

    def _read(self, pid: int, name: str) -> str | None:
        if pid <= 0:
            return None
        try:
            with (self._root / str(pid) / name).open("rb") as f:
                return f.read(_MAX_FILE).decode("utf-8", "replace")
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            return None  # the process has exited (or never was)
        except OSError as exc:
            raise AttestationRefused(f"cannot read /proc/{pid}/{name}: {exc.strerror}") from exc


def parse_start_time(stat_text: str) -> int | None:
    """Field 22 of a `/proc/<pid>/stat` line; None when the line is not one."""
    _, paren, rest = stat_text.rpartition(")")
    if not paren:
        return None
    fields = rest.split()
    if len(fields) <= _START_TIME_AFTER_COMM:
        return None
    value = fields[_START_TIME_AFTER_COMM]
    return int(value) if value.isdigit() else None
