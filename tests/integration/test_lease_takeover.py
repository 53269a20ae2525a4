"""A supervisor killed while it holds the rotation lease does not stall its restart.

The lease would otherwise stay held for its TTL (a minute) after `kill -9`: the restarted
server could not rotate or act on an operator's request for that minute, long enough for a
short intermediate to run out (seen in the crash campaign, docs/reliability.md). The restart
finds the holder gone from this host and takes the lease over at once."""

from __future__ import annotations

import signal
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, delete, insert, select

from meshca.infra.db.schema import leases
from tests.support import AdminClient, admin_token, start_meshca


def _holder_of(pid: int) -> str:
    """The identity the process `pid` holds leases under (host/pid/boot:start)."""
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:12]
    stat = Path(f"/proc/{pid}/stat").read_text()
    started = stat[stat.rfind(")") + 2:].split()[19]
    return f"{socket.gethostname()}/{pid}/{boot}:{started}"


def test_restart_after_kill_takes_over_the_dead_supervisors_rotation_lease(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_meshca(data)
    holder = _holder_of(first.process.pid)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    engine = create_engine(first.database_url)
    with engine.begin() as connection:  # as if the kill landed inside a rotation pass
        connection.execute(delete(leases).where(leases.c.name == "ca-rotator"))
        connection.execute(insert(leases).values(
            name="ca-rotator", holder=holder, fencing=7,
            expires_at=datetime.now(UTC) + timedelta(hours=1)))

    second = start_meshca(data)
    try:
        started = time.monotonic()
        answer = AdminClient(second).post("/v1/ca:prepare", {"kind": "intermediate"},
                                          token=admin_token(second))
        assert answer.status == 201, answer.body
        assert time.monotonic() - started < 10  # not the lease's hour, nor the 15 s lease wait
        with engine.connect() as connection:
            row = connection.execute(select(leases.c.holder, leases.c.fencing).where(
                leases.c.name == "ca-rotator")).first()
        assert row is None or (row[0] != holder and row[1] > 7)  # released after, or still ours
        assert f"taken over from {holder}" in second.log_text()
    finally:
        second.stop()
        engine.dispose()
