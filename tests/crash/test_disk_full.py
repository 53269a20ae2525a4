"""The disk fills up under a running server: UNAVAILABLE, nothing half-written, recovery when
space returns (tests/crash/disk_full.py says how)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.crash.disk_full import NotPermitted, can_mount, run_disk_full, small_tmpfs


def test_a_full_disk_refuses_with_unavailable_and_recovers(tmp_path: Path) -> None:
    reason = can_mount()
    if reason is not None:
        pytest.skip(reason)
    try:
        with small_tmpfs(tmp_path / "disk") as mount_point:
            result, server = run_disk_full(mount_point)
            assert result.problems() == [], result
            assert result.before == 5 and result.during["UNAVAILABLE"] >= 20
            assert "Traceback" not in server.log_text()
    except NotPermitted as exc:
        pytest.skip(f"mount -t tmpfs is not permitted here: {exc}")
