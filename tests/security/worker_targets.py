"""Bodies of the spawned workers in the supervision tests: importing this module is cheap."""

from __future__ import annotations

import os
import socket
import time

from meshca.infra.supervision import WorkerEnd


def ready(end: WorkerEnd) -> None:
    end.report_ready()
    _idle()


def fail(end: WorkerEnd) -> None:
    end.report_failure("cannot open the database\n  File 'x.py', line 2")


def die(end: WorkerEnd) -> None:
    os._exit(3)


def silent(end: WorkerEnd) -> None:
    _idle()


def listen(end: WorkerEnd) -> None:
    """Listen on a port of its own, say which on stdout, report ready and idle."""
    sock = socket.create_server(("127.0.0.1", 0))
    print(f"worker {os.getpid()} {sock.getsockname()[1]}", flush=True)
    end.report_ready()
    _idle()


def _idle() -> None:
    while True:
        time.sleep(1)
