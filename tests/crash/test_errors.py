"""Errors a person can act on, never a traceback (issue 17, item 4): bad start-up settings are
one line naming the setting and its fix, with exit code 2; a stop while requests are in flight
logs no traceback; and the session-wide log check (tests/conftest.py) sees what it must."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from tests.support import (
    TRACEBACK,
    csr_pem,
    expect_traceback,
    logs_with_tracebacks,
    start_meshca,
)

NO_LIMITS = ("--issuance-rate-per-identity", "off", "--issuance-rate-per-source", "off")


def _serve(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshca", "serve", "--data-dir", str(tmp_path / "data"),
         "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
         "--ext-authz-addr", "127.0.0.1:0", *extra],
        capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("flags", "setting", "fix"), [
    (["--vault-auth", "token", "--vault-token-file", "{tmp}/missing-token"],
     "--vault-token-file {tmp}/missing-token: cannot read it (No such file or directory)",
     "write the Vault token there"),
    (["--vault-auth", "token", "--vault-token-file", "{tmp}/empty"],
     "--vault-token-file {tmp}/empty: the file is empty", "Vault Agent's sink"),
    (["--vault-auth", "approle", "--vault-role-id", "r", "--vault-secret-id-file", "{tmp}"],
     "--vault-secret-id-file {tmp}: cannot read it (Is a directory)", "write the AppRole secret ID"),
    (["--vault-auth", "token", "--vault-token-file", "{tmp}/empty", "--vault-ca-cert", "{tmp}/no.pem"],
     "--vault-ca-cert {tmp}/no.pem: cannot read it", "the CA that signed Vault's certificate"),
], ids=["token-missing", "token-empty", "secret-id-is-a-directory", "ca-cert-missing"])
def test_a_bad_vault_file_is_one_line_naming_the_setting_and_the_fix(
        tmp_path: Path, flags: list[str], setting: str, fix: str) -> None:
    (tmp_path / "empty").write_text("")
    result = _serve(tmp_path, "--keystore", "vault-kv", "--vault-addr", "http://127.0.0.1:1",
                    *(f.format(tmp=tmp_path) for f in flags))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # Vault was never dialled: nothing else to say
    assert lines[0].startswith(f"meshca: cannot start: {setting.format(tmp=tmp_path)}"), lines[0]
    assert fix in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("sig", "workers"), [(signal.SIGTERM, "1"), (signal.SIGINT, "2")],
                         ids=["SIGTERM-1-worker", "SIGINT-2-workers"])
def test_a_stop_while_requests_are_in_flight_logs_no_traceback(
        tmp_path: Path, sig: signal.Signals, workers: str) -> None:
    server = start_meshca(tmp_path / "data", "--workers", workers, *NO_LIMITS)
    token, csr = server.token(), csr_pem()
    outcomes: Counter[str] = Counter()
    stopping = threading.Event()

    def caller() -> None:
        while not stopping.is_set():
            try:
                server.create_certificate(csr, token=token)
                outcomes["OK"] += 1
            except grpc.RpcError as exc:
                outcomes[exc.code().name] += 1

    threads = [threading.Thread(target=caller) for _ in range(6)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while outcomes["OK"] < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.process.send_signal(sig)
        assert server.process.wait(30) == 0
    finally:
        stopping.set()
        for thread in threads:
            thread.join(30)
        server.stop()
    assert outcomes["OK"] >= 50, outcomes
    # Calls cut by the stop are UNAVAILABLE (Istio's agent retries those), nothing else.
    assert set(outcomes) <= {"OK", "UNAVAILABLE"}, outcomes
    log = server.log_text()
    assert "Traceback" not in log and "CancelledError" not in log, log[-3000:]


def test_the_session_log_check_sees_an_unprovoked_traceback(tmp_path: Path) -> None:
    crashed = tmp_path / "crashed.log"
    crashed.write_text(f"starting\n{TRACEBACK}:\n  File \"x.py\", line 1\nValueError: boom\n")
    (tmp_path / "fine.log").write_text("starting\nstopping\n")
    found = logs_with_tracebacks(tmp_path)
    assert list(found) == [crashed] and "ValueError: boom" in found[crashed]
    expect_traceback(crashed, "this test writes it to check the check")
    assert logs_with_tracebacks(tmp_path) == {}
