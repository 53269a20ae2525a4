"""The disk fills up under a running server (issue 17, item 2), shared by
tests/crash/test_disk_full.py and scripts/crash-test.

The data directory is a small tmpfs (`mount -t tmpfs -o size=…`, which needs CAP_SYS_ADMIN: the
test skips, and the script says so, where it is not permitted). A filler file takes the last
byte; then CreateCertificate must answer UNAVAILABLE (or succeed, while SQLite still has a free
page), an admin write 503, never INTERNAL, UNKNOWN or 500; nothing half-written (SQLite's
integrity check passes and every certificate a client received, and only those, is recorded);
and once the filler is removed the server issues again without a restart."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import grpc
from cryptography import x509

from tests.support import AdminClient, MeshcaProcess, admin_token, csr_pem, start_meshca

NO_LIMITS = ("--issuance-rate-per-identity", "off", "--issuance-rate-per-source", "off")


class NotPermitted(Exception):
    """This process may not mount a tmpfs."""


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "16m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        raise NotPermitted(mounted.stderr.strip() or f"mount exited with {mounted.returncode}")
    try:
        yield path
    finally:
        for _ in range(50):  # a process that just died may hold it a moment longer
            if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode == 0:
                break
            time.sleep(0.1)


def fill(directory: Path) -> Path:
    """A file that takes every free byte of `directory`'s filesystem."""
    filler = directory / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):  # big writes, then the last bytes
            try:
                while True:
                    os.write(descriptor, b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(descriptor)
    return filler


@dataclass
class DiskFullResult:
    before: int = 0
    during: Counter[str] = field(default_factory=Counter)
    admin_during: int | None = None
    recovered_after: float | None = None
    received: set[int] = field(default_factory=set)
    recorded: set[int] = field(default_factory=set)
    integrity: str = ""
    server_alive: bool = True

    def problems(self) -> list[str]:
        found = []
        if not self.during["UNAVAILABLE"]:
            found.append(f"no CSR was refused UNAVAILABLE on the full disk: {dict(self.during)}")
        undocumented = set(self.during) - {"OK", "UNAVAILABLE"}
        if undocumented:
            found.append(f"on the full disk: {dict(self.during)}")
        if self.admin_during not in (503, 200):
            found.append(f"an admin write on the full disk answered {self.admin_during}")
        if self.recovered_after is None:
            found.append("no issuance after the space came back")
        if self.integrity != "ok":
            found.append(f"SQLite integrity check: {self.integrity}")
        if self.received != self.recorded:
            found.append(f"received {len(self.received)} certificates, recorded {len(self.recorded)}: "
                         f"{len(self.received - self.recorded)} missing, "
                         f"{len(self.recorded - self.received)} recorded but never received")
        if not self.server_alive:
            found.append("the server died")
        return found


def _serial(chain: list[str]) -> int:
    return x509.load_pem_x509_certificate(chain[0].encode()).serial_number


def run_disk_full(mount_point: Path, *, attempts: int = 400) -> tuple[DiskFullResult, MeshcaProcess]:
    """Run the scenario on a server whose data dir is `mount_point` (already a small tmpfs)."""
    result = DiskFullResult()
    server = start_meshca(mount_point, *NO_LIMITS)  # its log is beside the mount point, not on it
    try:
        token = server.token("disk", "full")
        for _ in range(5):
            result.received.add(_serial(server.create_certificate(csr_pem(), token=token)))
        result.before = len(result.received)
        filler = fill(mount_point)
        full_refusals = 0
        for _ in range(attempts):
            try:
                result.received.add(_serial(server.create_certificate(csr_pem(), token=token)))
                result.during["OK"] += 1
            except grpc.RpcError as exc:
                result.during[exc.code().name] += 1
                full_refusals += exc.code() is grpc.StatusCode.UNAVAILABLE
            if full_refusals >= 20:
                break
        spiffe_id = quote("spiffe://cluster.local/ns/disk/sa/other", safe="")
        result.admin_during = AdminClient(server).post(
            f"/v1/identities/{spiffe_id}:block", {"reason": "disk full test"},
            token=admin_token(server)).status
        filler.unlink()
        started = time.monotonic()
        while time.monotonic() - started < 30:
            try:
                result.received.add(_serial(server.create_certificate(csr_pem(), token=token)))
                result.recovered_after = time.monotonic() - started
                break
            except grpc.RpcError:
                time.sleep(0.1)
        result.server_alive = server.process.poll() is None
    finally:
        server.stop()
    database = sqlite3.connect(mount_point / "meshca.db")
    try:
        result.integrity = str(database.execute("PRAGMA integrity_check").fetchone()[0])
        result.recorded = {int(serial, 16) for (serial,) in database.execute(
            "SELECT serial FROM issued_certificates WHERE spiffe_id = ?",
            ("spiffe://cluster.local/ns/disk/sa/full",))}
    finally:
        database.close()
    return result, server


def can_mount() -> str | None:
    """None if this process may mount a tmpfs; else why not."""
    if os.geteuid() != 0:
        return "not root: mounting a tmpfs needs CAP_SYS_ADMIN"
    return None
