"""scripts/fuzz: the campaigns of tests/fuzz/ at volume, each against its own real server
(or, for the authorization engine, in process), with the counts by outcome and the wall time."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.fuzz.campaign import Tally
from tests.support import MeshcaProcess, logs_with_tracebacks, postgres_url, reset_postgres, start_meshca

CAMPAIGNS = ("ca", "ca-identity", "admin", "authz", "ext_authz")


def _server(work: Path, name: str, extra: tuple[str, ...], postgres: bool) -> MeshcaProcess:
    url = postgres_url() if postgres else None
    if url:
        reset_postgres(url)
    return start_meshca(work / name / "data", *extra, database_url=url)


def _run_ca(work: Path, args: argparse.Namespace, focus: str = "all") -> Tally:
    from tests.fuzz.ca_campaign import SERVER_FLAGS, fuzz_create_certificate

    server = _server(work, "ca" if focus == "all" else f"ca-{focus}", SERVER_FLAGS, args.postgres)
    try:
        return fuzz_create_certificate(server, args.inputs, seed_value=args.seed, seconds=args.seconds,
                                       focus=focus)
    finally:
        server.stop()


def _run_admin(work: Path, args: argparse.Namespace) -> Tally:
    from tests.fuzz.admin_campaign import SERVER_FLAGS, fuzz_admin

    server = _server(work, "admin", SERVER_FLAGS, args.postgres)
    try:
        return fuzz_admin(server, args.inputs, seed_value=args.seed, seconds=args.seconds,
                          stateful=max(20, args.inputs // 500))
    finally:
        server.stop()


def _run_authz(work: Path, args: argparse.Namespace) -> Tally:
    from tests.fuzz.authz_campaign import fuzz_authz

    return fuzz_authz(args.inputs, seed_value=args.seed, seconds=args.seconds)


def _run_ext_authz(work: Path, args: argparse.Namespace) -> Tally:
    from tests.fuzz.ext_authz_campaign import SERVER_FLAGS, fuzz_ext_authz

    server = _server(work, "ext_authz", SERVER_FLAGS, args.postgres)
    try:
        return fuzz_ext_authz(server, args.inputs, seed_value=args.seed, seconds=args.seconds)
    finally:
        server.stop()


RUNNERS: dict[str, Callable[[Path, argparse.Namespace], Tally]] = {
    "ca": _run_ca, "ca-identity": lambda work, args: _run_ca(work, args, "identity"),
    "admin": _run_admin, "authz": _run_authz, "ext_authz": _run_ext_authz}


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/fuzz")
    parser.add_argument("--campaign", choices=[*CAMPAIGNS, "all"], default="all")
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--seed", type=int, default=17)
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
            tally = RUNNERS[name](work, args)
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
