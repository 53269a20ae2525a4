"""A server holds the same SQLite handles from its start on, whatever peaks of concurrency come.

Each process opens its pools' connections at start, and a peak waits for one of them instead of
opening more. (Filled lazily with overflow, the pools grew at each new peak, and SQLite keeps the
file of a closed connection open while another connection holds a lock: the 60-minute soak saw
the handles climb from 15 to 23 and read it as a leak.)"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support import AdminClient, MeshcaProcess, admin_token, csr_pem, start_meshca


def _database_handles(pid: int, data: Path) -> int:
    names = {str(data / "meshca.db"), str(data / "meshca.db-wal")}
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}") in names
        except OSError:
            continue  # closed meanwhile
    return count


def _peak(server: MeshcaProcess) -> None:
    client, token = AdminClient(server), admin_token(server)

    def read(index: int) -> int:
        path = ("/v1/certificates?limit=5", "/v1/audit?limit=5", "/v1/ca")[index % 3]
        return client.get(path, token=token).status

    def issue(index: int) -> None:
        server.create_certificate(csr_pem(), token=server.token("peak", f"sa-{index % 4}"))

    with ThreadPoolExecutor(32) as pool:
        issued = [pool.submit(issue, i) for i in range(64)]
        statuses = list(pool.map(read, range(96)))
        for future in issued:
            future.result()
    assert set(statuses) == {200}


def test_the_database_handles_of_a_server_do_not_grow_with_peaks(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_meshca(data, "--workers", "1", "--issuance-rate-per-identity", "off",
                          "--issuance-rate-per-source", "off")
    try:
        before = _database_handles(server.process.pid, data)
        assert before > 0
        for _ in range(4):
            _peak(server)
        assert _database_handles(server.process.pid, data) == before
    finally:
        server.stop()
