"""scripts/fuzz: the campaigns of tests/fuzz/ at volume, each against its own real server
(or, for the authorization engine, in process), with the counts by outcome and the wall time."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from tests.fuzz.campaign import Tally
from tests.support import MeshcaProcess, logs_with_tracebacks, postgres_url, reset_postgres, start_meshca

CAMPAIGNS = ("ca", "ca-identity", "admin", "authz", "ext_authz")


def _server(work: Path, name: str, extra: tuple[str, ...], postgres: bool) -> MeshcaProcess:
    url = postgres_url() if postgres else None
    if url:
        reset_postgres(url)
    return start_meshca(work / name / "data", *extra, database_url=url)


# A job: (the server or None, inputs, seed, seconds) -> its tally; `--jobs N` runs N at once.
Job = Callable[[MeshcaProcess | None, int, int, float | None], Tally]
# What a campaign runs once, after all its jobs: (server, the campaign's inputs, its tally).
# The admin API's stateful phase rotates and taints CA generations, so no job may still be
# running (it would lose its trust in the server's certificate).
Once = Callable[[MeshcaProcess | None, int, Tally], None]


def _ca(focus: str) -> Job:
    def job(server: MeshcaProcess | None, inputs: int, seed: int, seconds: float | None) -> Tally:
        from tests.fuzz.ca_campaign import fuzz_create_certificate

        assert server is not None
        return fuzz_create_certificate(server, inputs, seed_value=seed, seconds=seconds, focus=focus)
    return job


def _admin(server: MeshcaProcess | None, inputs: int, seed: int, seconds: float | None) -> Tally:
    from tests.fuzz.admin_campaign import fuzz_admin

    assert server is not None
    return fuzz_admin(server, inputs, seed_value=seed, seconds=seconds)


def _admin_stateful(server: MeshcaProcess | None, inputs: int, tally: Tally) -> None:
    from tests.fuzz.admin_campaign import run_stateful

    assert server is not None
    run_stateful(server, max(20, inputs // 500), tally)


def _authz(server: MeshcaProcess | None, inputs: int, seed: int, seconds: float | None) -> Tally:
    from tests.fuzz.authz_campaign import fuzz_authz

    return fuzz_authz(inputs, seed_value=seed, seconds=seconds)


def _ext_authz(server: MeshcaProcess | None, inputs: int, seed: int,
               seconds: float | None) -> Tally:
    from tests.fuzz.ext_authz_campaign import fuzz_ext_authz

    assert server is not None  # its policies installed by run_campaign
    return fuzz_ext_authz(server, inputs, seed_value=seed, seconds=seconds, install=False)


def _server_flags(name: str) -> tuple[str, ...] | None:
    """The flags of the server a campaign runs against; None: it runs in process."""
    if name == "authz":
        return None
    module = {"ca": "ca_campaign", "ca-identity": "ca_campaign", "admin": "admin_campaign",
              "ext_authz": "ext_authz_campaign"}[name]
    flags: tuple[str, ...] = __import__(f"tests.fuzz.{module}", fromlist=["SERVER_FLAGS"]).SERVER_FLAGS
    return flags


JOBS: dict[str, Job] = {"ca": _ca("all"), "ca-identity": _ca("identity"), "admin": _admin,
                        "authz": _authz, "ext_authz": _ext_authz}
ONCE: dict[str, Once] = {"admin": _admin_stateful}


def _job_process(job: Job, server: MeshcaProcess | None, inputs: int, seed: int,
                 seconds: float | None, results: Queue[dict[str, Any]]) -> None:
    results.put(job(server, inputs, seed, seconds).summary())


def _run_jobs(job: Job, server: MeshcaProcess | None, args: argparse.Namespace) -> Tally:
    """`--jobs` client processes, each drawing its own inputs (seed + 1000 * job number)."""
    # fork: the children inherit the server's handle; none has opened a channel yet
    context = multiprocessing.get_context("fork")
    results: Queue[dict[str, Any]] = context.Queue()
    shares = [args.inputs // args.jobs + (1 if i < args.inputs % args.jobs else 0)
              for i in range(args.jobs)]
    tally = Tally("")
    children = [context.Process(target=_job_process, args=(
        job, server, share, args.seed + 1000 * i, args.seconds, results))
        for i, share in enumerate(shares)]
    for child in children:
        child.start()
    for _ in children:
        summary = results.get()
        tally.name = summary["campaign"] + f" ({args.jobs} jobs)"
        tally.absorb(summary)
    for child in children:
        child.join()
        if child.exitcode != 0:
            tally.record("job failed", f"a job process ended with exit code {child.exitcode}")
    return tally


def run_campaign(name: str, work: Path, args: argparse.Namespace) -> Tally:
    """One campaign: its server (if any), then `--jobs` client processes, each drawing its own
    inputs (seed + job number) against that server; their counts added up in one tally."""
    flags = _server_flags(name)
    server = None if flags is None else _server(work, name, flags, args.postgres)
    try:
        if name == "ext_authz":
            from tests.fuzz.ext_authz_campaign import install_policies

            assert server is not None
            install_policies(server)
        if args.jobs == 1:
            tally = JOBS[name](server, args.inputs, args.seed, args.seconds)
        else:
            tally = _run_jobs(JOBS[name], server, args)
        once = ONCE.get(name)
        if once is not None:
            once(server, args.inputs, tally)
        return tally.done()
    finally:
        if server is not None:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/fuzz")
    parser.add_argument("--campaign", choices=[*CAMPAIGNS, "all"], default="all")
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--jobs", type=int, default=1,
                        help="client processes per campaign, each with its own inputs (default 1)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--postgres", action="store_true",
                        help="servers on $MESHCA_TEST_POSTGRES_URL instead of SQLite")
    args = parser.parse_args()
    args.seconds = None if args.minutes is None else args.minutes * 60
    os.environ.setdefault("MESHCA_WORKERS", "1")
    work = Path(tempfile.mkdtemp(prefix="meshca-fuzz-"))
    failed = False
    try:
        for name in CAMPAIGNS if args.campaign == "all" else (args.campaign,):
            tally = run_campaign(name, work, args)
            tracebacks = logs_with_tracebacks(work / name) if (work / name).exists() else {}
            for path, excerpt in tracebacks.items():
                tally.record("log traceback", f"traceback in {path.name}", excerpt)
            print(tally.render(), flush=True)
            if args.json is not None:
                with args.json.open("a") as out:
                    out.write(tally.json() + "\n")
            failed |= bool(tally.problems)
    finally:
        if os.environ.get("FUZZ_KEEP"):
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
