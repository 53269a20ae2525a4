"""scripts/crash-test: the crash campaign of tests/crash/ at volume, with its figures."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

from sqlalchemy import create_engine

from tests.crash.crash_support import Campaign, CycleResult, load_factor
from tests.crash.disk_full import NotPermitted, can_mount, run_disk_full, small_tmpfs

CONFIGS = {  # name: (workers, rotating, postgres)
    "sqlite-1": (1, True, False), "sqlite-2": (2, False, False),
    "postgres-1": (1, False, True), "postgres-2": (2, True, True)}
DATABASE = "meshca_crash_campaign"


def _admin_url() -> str:
    return os.environ["MESHCA_TEST_POSTGRES_URL"].replace("postgresql://", "postgresql+psycopg://", 1)


def _own_database(create: bool) -> str:
    engine = create_engine(_admin_url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        if create:
            connection.exec_driver_sql(f"CREATE DATABASE {DATABASE}")
    engine.dispose()
    base = os.environ["MESHCA_TEST_POSTGRES_URL"].rsplit("/", 1)[0]
    return f"{base}/{DATABASE}"


def _figures(name: str, results: list[CycleResult], received: int, errors: Counter[str]) -> str:
    serving = [r.serving_after for r in results]
    gone = [r.tree_gone_after for r in results]
    loads = [r.load for r in results]
    stops = Counter(r.stop for r in results)
    return (f"== {name}: {len(results)} stops ({', '.join(f'{k} {v}' for k, v in sorted(stops.items()))}); "
            f"{received} certificates received; client errors {dict(errors)}\n"
            f"   issuing again after restart: median {statistics.median(serving):.2f} s, "
            f"max {max(serving):.2f} s (load per core median {statistics.median(loads):.1f}, "
            f"max {max(loads):.1f})\n"
            f"   process tree gone after the stop: max {max(gone):.2f} s; ports free after every stop: "
            f"{all(r.ports_free for r in results)}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/crash-test")
    parser.add_argument("--stops", type=int, default=100)
    parser.add_argument("--only", choices=[*CONFIGS, "disk-full"])
    args = parser.parse_args()
    os.environ.setdefault("MESHCA_WORKERS", "1")
    work = Path(tempfile.mkdtemp(prefix="meshca-crash-"))
    names = [args.only] if args.only else [*CONFIGS, "disk-full"]
    per_config = max(1, args.stops // len([n for n in names if n in CONFIGS] or [1]))
    problems: list[str] = []
    try:
        for name in names:
            if name == "disk-full":
                problems += [f"disk-full: {p}" for p in _disk_full(work)]
                continue
            workers, rotating, postgres = CONFIGS[name]
            url = _own_database(create=True) if postgres else None
            campaign = Campaign(work, name, workers=workers, rotating=rotating, database_url=url,
                                rng=random.Random(hash(name) & 0xFFFF))
            clients = campaign.run(per_config, on_cycle=lambda r: print(
                f"   {r.stop:7} after {r.ran_for:.2f} s: tree gone {r.tree_gone_after:.2f} s, "
                f"issuing again {r.serving_after:.2f} s", flush=True))
            found = campaign.problems(clients)
            print(_figures(name, campaign.results, len(clients.received), clients.errors), flush=True)
            for problem in found:
                print(f"   PROBLEM {problem}", flush=True)
            problems += [f"{name}: {p}" for p in found]
            if postgres:
                _own_database(create=False)
    finally:
        if problems or os.environ.get("CRASH_KEEP"):
            print(f"work directory kept (logs, data): {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"== {len(problems)} problems")
    return 1 if problems else 0


def _disk_full(work: Path) -> list[str]:
    reason = can_mount()
    if reason is not None:
        print(f"== disk-full: not run ({reason})")
        return []
    try:
        with small_tmpfs(work / "disk") as mount_point:
            result, _ = run_disk_full(mount_point)
    except NotPermitted as exc:
        print(f"== disk-full: not run (mount -t tmpfs not permitted: {exc})")
        return []
    print(f"== disk-full (16 MiB tmpfs as the data dir, a filler file taking the last byte): "
          f"{result.before} issued before; while full {dict(result.during)}, an admin write "
          f"answered {result.admin_during}; issuing again {result.recovered_after:.2f} s after the "
          f"space returned; SQLite integrity {result.integrity}; {len(result.received)} received, "
          f"{len(result.recorded)} recorded (load per core {load_factor():.1f})")
    for problem in result.problems():
        print(f"   PROBLEM {problem}")
    return result.problems()


if __name__ == "__main__":
    sys.exit(main())
