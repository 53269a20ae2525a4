"""Running the documentation's commands as written, against a real `meshca serve`.

The server is started the way a page says (`scripts/run …`), in the repository, with its
listeners moved to free ports and its data dir into the test's directory through meshca's own
environment variables, so the words of the command stay as documented. The page's commands then
run with bash in a work directory that looks like a clone's top (`.venv`, `meshca-data`,
`meshca-data.kek`). Addresses a page writes with the default ports are rewritten to the actual
ones; that is the only change made to a documented command.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DocServer:
    workdir: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def data_dir(self) -> Path:
        return self.workdir / "meshca-data"

    @property
    def endpoints(self) -> dict[str, str]:
        loaded = json.loads((self.data_dir / "endpoints.json").read_text())
        assert isinstance(loaded, dict)
        return loaded

    def localize(self, script: str) -> str:
        """The documented default addresses → this server's."""
        ends = self.endpoints
        grpc_port = ends["grpc"].rpartition(":")[2]
        admin_port = ends["admin"].rpartition(":")[2]
        return (script.replace("localhost:15012", f"localhost:{grpc_port}")
                .replace("localhost:8443", f"localhost:{admin_port}")
                .replace("127.0.0.1:15014", ends["metrics"]))

    def sh(self, script: str, *, timeout: float = 120, check: bool = True,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """`script` run by bash -e -o pipefail in the work directory."""
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", self.localize(script)],
                              cwd=self.workdir, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        if check:
            assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        return done

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def venv_dir() -> Path:
    """The virtualenv running the tests: the one the documented `.venv/bin/meshca` means."""
    return Path(sys.prefix)


def start_documented(command: str, workdir: Path, timeout: float = 90) -> DocServer:
    """Run `command` (a documented `scripts/run …` line) from the repository's top."""
    assert command.startswith("scripts/run"), command
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / ".venv").exists():
        (workdir / ".venv").symlink_to(venv_dir())
    data_dir = workdir / "meshca-data"
    (data_dir / "endpoints.json").unlink(missing_ok=True)
    log = workdir / "server.log"
    env = {
        **os.environ,
        "MESHCA_DATA_DIR": str(data_dir),  # the KEK goes beside it: workdir/meshca-data.kek
        "MESHCA_GRPC_ADDR": "127.0.0.1:0",
        "MESHCA_ADMIN_ADDR": "127.0.0.1:0",
        "MESHCA_METRICS_ADDR": "127.0.0.1:0",
        "MESHCA_EXT_AUTHZ_ADDR": "127.0.0.1:0",
        "MESHCA_WORKERS": "1",
        # scripts/run installs only when its venv's stamp is missing: name the one the tests made.
        "MESHCA_EXTRAS": os.environ.get("MESHCA_EXTRAS", "test"),
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("ab") as out:
        process = subprocess.Popen(["bash", "-c", command], cwd=ROOT, stdout=out,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = DocServer(workdir, process, log)
    deadline = time.monotonic() + timeout
    while not (data_dir / "endpoints.json").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{command} did not start:\n{log.read_text()}")
        time.sleep(0.1)
    return server


def command_lines(script: str) -> list[str]:
    """The commands of a shell block as written, one per entry: continuation lines joined,
    comment lines (a command's shown output) dropped."""
    joined = script.replace("\\\n", " ")
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def words(line: str) -> list[str]:
    """A command line's words, its trailing comment dropped."""
    return shlex.split(line, comments=True)
