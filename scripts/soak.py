"""scripts/soak: tests/crash/soak.py for as long as asked, with its figures."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from tests.crash.soak import run_soak
from tests.support import postgres_url, reset_postgres


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/soak")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--postgres", action="store_true",
                        help="on $MESHCA_TEST_POSTGRES_URL (its tables are dropped first)")
    args = parser.parse_args()
    url = postgres_url() if args.postgres else None
    if url:
        reset_postgres(url)
    work = Path(tempfile.mkdtemp(prefix="meshca-soak-"))
    try:
        report = run_soak(work, args.minutes, database_url=url,
                          log=lambda line: print(line, flush=True))
    finally:
        if not os.environ.get("SOAK_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    print(report.render(), flush=True)
    return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
