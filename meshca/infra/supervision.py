"""Worker processes tied to their supervisor, so that none outlives it.

Each worker gets two pipes and, on Linux, a parent-death signal. Nothing else is shared, so
neither side can block on the other (a multiprocessing Event can: its Condition waits for an
answer from the other process, and a dead process never answers):

* the report pipe, worker to supervisor: the worker writes one line, `ready` or `failed
  <reason>`; end-of-file before that line means the worker died;
* the lifeline, supervisor to worker: the supervisor never writes, and the kernel closes its
  end however the supervisor ends (exit, SIGTERM, SIGINT, kill -9), so a thread of the worker
  sees end-of-file;
* PR_SET_PDEATHSIG: the kernel signals the worker as soon as the supervisor is gone.

A worker whose supervisor is gone stops listening at once, so that no new connection lands on
it, and exits. The module imports nothing heavy and lives outside `meshca.wiring` (importing
that package loads the whole server, about a second): `worker_entry` ties a freshly spawned
worker to its supervisor before the worker imports anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import logging
import os
import signal
import socket
import stat
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, Pipe
from multiprocessing.process import BaseProcess
from types import FrameType

from meshca.errors import MeshcaError

READY = "ready"
FAILED = "failed"
# Sent by the kernel when the supervisor dies (Linux). SIGHUP, "the other end hung up": a
# worker ignores one that arrives while its supervisor still lives.
PARENT_DEATH_SIGNAL = signal.SIGHUP
ORPHAN_EXIT_CODE = 1
MAX_REASON_CHARS = 500
_PR_SET_PDEATHSIG = 1
_FALLBACK_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_leaving = threading.Lock()


class WorkerStartError(MeshcaError):
    """A worker process did not start; the message names it and says why, on one line."""


@dataclass
class WorkerEnd:
    """The worker's ends of its pipes; passed to the spawned process as an argument."""

    name: str
    parent_pid: int
    report: Connection  # the write end of the report pipe
    lifeline: Connection  # the read end of the lifeline
    _at_leave: list[Callable[[], object]] = field(default_factory=list, repr=False)

    def watch_parent(self) -> None:
        """Exit as soon as the supervisor is gone. Call first thing in the worker."""
        signal.signal(PARENT_DEATH_SIGNAL, self._on_parent_death_signal)
        _set_parent_death_signal(PARENT_DEATH_SIGNAL)
        # The supervisor may have died before the signal was armed; then no one sends it.
        if os.getppid() != self.parent_pid:
            self._leave("before the worker was tied to it")
        threading.Thread(target=self._watch_lifeline, name="meshca-lifeline", daemon=True).start()

    def at_leave(self, tidy: Callable[[], object]) -> None:
        """Run `tidy` (quick, best effort) before exiting for want of a supervisor."""
        self._at_leave.append(tidy)

    def report_ready(self) -> None:
        self._report_line(READY)

    def report_failure(self, reason: str) -> None:
        self._report_line(f"{FAILED} {one_line(reason)}")

    def close(self) -> None:
        self.report.close()
        self.lifeline.close()

    def _report_line(self, line: str) -> None:
        # One short write to a pipe never blocks; a supervisor that is gone makes it fail
        # (EPIPE), and then the parent-death watch ends this process anyway.
        with contextlib.suppress(OSError):
            os.write(self.report.fileno(), f"{line}\n".encode())
        self.report.close()

    def _on_parent_death_signal(self, signum: int, frame: FrameType | None) -> None:
        if os.getppid() != self.parent_pid:  # the kernel re-parents before it signals
            self._leave("parent-death signal")

    def _watch_lifeline(self) -> None:
        fd = self.lifeline.fileno()
        while True:
            try:
                if os.read(fd, 64):
                    continue  # the supervisor never writes; ignore it if it ever does
            except OSError:
                pass  # cannot watch any more: fail safe
            self._leave("lifeline closed")

    def _leave(self, how: str) -> None:
        if not _leaving.acquire(blocking=False):
            return  # another path is already leaving
        stop_listening()
        for tidy in self._at_leave:
            with contextlib.suppress(Exception):
                tidy()
        _say(f"{self.name}: supervisor (pid {self.parent_pid}) is gone ({how}); "
             "stopped listening, exiting")
        os._exit(ORPHAN_EXIT_CODE)


def worker_entry(end: WorkerEnd, main: str, *args: object) -> None:
    """Target of a spawned worker: first tie it to its supervisor, then import `main`
    ("module:function") and call it with `end` and `args`."""
    end.watch_parent()
    # Ctrl-C reaches the whole process group; the supervisor stops its workers in order, so a
    # worker leaves SIGINT to it (blocked since it was spawned, see WorkerLink.start) until
    # `main` installs handlers of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    module, _, function = main.partition(":")
    getattr(importlib.import_module(module), function)(end, *args)


class WorkerLink:
    """The supervisor's side of one worker: start it, hear whether it is ready, let it go."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._reports, report_writer = Pipe(duplex=False)
        lifeline_reader, self._lifeline = Pipe(duplex=False)
        self.worker_end = WorkerEnd(name, os.getpid(), report_writer, lifeline_reader)
        self.process: BaseProcess | None = None
        self._terminated = False

    def start(self, process: BaseProcess) -> None:
        """Start `process`, whose arguments carry `worker_end`, then drop this process's copy
        of the worker's ends: end-of-file on either pipe must mean the other side is gone.
        Start it from the main thread: the parent-death signal follows the thread that forked."""
        # The worker starts with SIGINT blocked (the mask survives fork and exec) until
        # worker_entry ignores it: Python would otherwise meet a Ctrl-C while loading with a
        # traceback. A SIGINT for this process meanwhile waits, or goes to another thread.
        # multiprocessing's resource tracker is started first: starting it unblocks SIGINT.
        resource_tracker.ensure_running()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            self.worker_end.close()
        self.process = process

    def terminate(self) -> None:
        """Ask the worker to stop (SIGTERM), once: a second signal could find it closing its
        event loop, when Python can only complain about the signal on stderr."""
        if self.process is not None and self.process.is_alive() and not self._terminated:
            self._terminated = True
            self.process.terminate()

    async def ready(self, timeout: float) -> None:
        """Return once the worker reports ready; WorkerStartError if it reports a failure,
        dies first, or says nothing for `timeout` seconds."""
        try:
            line = await asyncio.wait_for(self._read_line(), timeout)
        except TimeoutError:
            raise WorkerStartError(f"{self.name} did not start within {timeout:g} s") from None
        if line == READY:
            return
        if not line:
            code = await self._exit_code()
            raise WorkerStartError(f"{self.name} exited with code {code} before it was ready")
        reason = line.removeprefix(f"{FAILED} ")
        raise WorkerStartError(f"{self.name} could not start: {one_line(reason)}")

    def close(self) -> None:
        """Let the worker go: closing the lifeline makes a worker that is still running exit."""
        self._reports.close()
        self._lifeline.close()

    async def _read_line(self) -> str:
        """The first line the worker wrote, or "" when it closed the pipe without one."""
        loop = asyncio.get_running_loop()
        fd = self._reports.fileno()
        line = loop.create_future()
        received = bytearray()

        def readable() -> None:
            chunk = os.read(fd, 4096)
            received.extend(chunk)
            if line.done():
                return
            if b"\n" in received:
                line.set_result(received.split(b"\n", 1)[0].decode(errors="replace"))
            elif not chunk:
                line.set_result("")

        loop.add_reader(fd, readable)
        try:
            result: str = await line
            return result
        finally:
            loop.remove_reader(fd)

    async def _exit_code(self) -> int | None:
        """The worker's exit code, waiting briefly: its pipe closes just before it is reaped."""
        if self.process is None:
            return None
        for _ in range(100):
            if self.process.exitcode is not None:
                break
            await asyncio.sleep(0.02)
        return self.process.exitcode


async def all_ready(links: Sequence[WorkerLink], stop: asyncio.Event, timeout: float) -> bool:
    """True once every worker is ready, False as soon as `stop` is set; the first
    WorkerStartError otherwise."""
    stopped = asyncio.ensure_future(stop.wait())
    waiting = {asyncio.ensure_future(link.ready(timeout)) for link in links}
    try:
        while waiting:
            done, _ = await asyncio.wait({*waiting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if stopped in done:
                return False
            for future in done:
                future.result()
            waiting -= done
        return True
    finally:
        for future in (stopped, *waiting):
            future.cancel()


def one_line(reason: str) -> str:
    flat = " ".join(reason.split())
    return flat if len(flat) <= MAX_REASON_CHARS else flat[:MAX_REASON_CHARS - 1] + "…"


def stop_listening() -> None:
    """Close every listening socket of this process, whoever owns it (the TLS front, the
    ext_authz server), so that the kernel sends no new connection here. Accepted ones stay."""
    for fd in _open_fds():
        with contextlib.suppress(OSError, ValueError):
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            with socket.socket(fileno=os.dup(fd)) as probe:
                listening = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            if listening:
                os.close(fd)


def _open_fds() -> list[int]:
    for directory in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return [int(name) for name in os.listdir(directory)]
    return []


def _set_parent_death_signal(signum: int) -> bool:
    """Linux: have the kernel send `signum` to this process when its parent dies."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        result = libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signum), ctypes.c_ulong(0),
                            ctypes.c_ulong(0), ctypes.c_ulong(0))
    except (OSError, AttributeError):
        return False
    return int(result) == 0


def _say(message: str) -> None:
    """One log line written straight to stderr: this may run in a signal handler, which must
    not wait for the logging module's locks."""
    handlers = logging.getLogger().handlers
    formatter = (handlers[0].formatter if handlers else None) or logging.Formatter(_FALLBACK_FORMAT)
    record = logging.LogRecord("meshca", logging.WARNING, __file__, 0, message, None, None)
    with contextlib.suppress(OSError):
        os.write(2, (formatter.format(record) + "\n").encode(errors="replace"))
