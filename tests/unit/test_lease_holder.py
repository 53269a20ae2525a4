"""A lease holder's identity, and the proof that a holder is gone (meshca.infra.lease_holder)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from meshca.infra.lease_holder import is_gone, this_process


def test_this_process_names_host_pid_boot_and_start_time() -> None:
    host, pid, stamp = this_process().split("/")
    boot, started = stamp.split(":")
    assert host == socket.gethostname() and int(pid) == os.getpid()
    assert len(boot) == 12 and started.isdigit()
    assert this_process() == this_process()  # stable for the life of the process


def test_a_running_process_is_not_gone_and_an_ended_one_is() -> None:
    assert not is_gone(this_process())
    ended = subprocess.run([sys.executable, "-c", "from meshca.infra.lease_holder import this_process;"
                            "print(this_process())"], capture_output=True, text=True, check=True)
    assert is_gone(ended.stdout.strip())


def test_a_reused_pid_is_told_apart_by_its_start_time() -> None:
    host, pid, stamp = this_process().split("/")
    boot, started = stamp.split(":")
    earlier = f"{host}/{pid}/{boot}:{int(started) - 1}"  # this pid, an earlier process
    assert is_gone(earlier)


def test_what_cannot_be_proven_is_never_gone(tmp_path: Path) -> None:
    host, pid, stamp = this_process().split("/")
    boot, started = stamp.split(":")
    never = [
        f"elsewhere/{pid}/{boot}:{int(started) - 1}",  # another host
        f"{host}/{pid}/000000000000:{int(started) - 1}",  # another boot
        f"{host}/{pid}",  # an older form, without boot and start time
        "replica-a", "", "a/b/c:d", f"{host}/x/{boot}:1",
    ]
    for holder in never:
        assert not is_gone(holder), holder
    assert not is_gone(f"{host}/{pid}/{boot}:{int(started) - 1}", proc=tmp_path)  # no /proc to read
    assert this_process(proc=tmp_path) == f"{host}/{pid}"
