"""Argument helpers shared by the `meshca` sub-commands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def env(name: str, default: str | None = None) -> str | None:
    """`MESHCA_<NAME>` from the environment: every flag's default can come from there."""
    return os.environ.get(f"MESHCA_{name}", default)


def data_dir_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, default=Path(env("DATA_DIR", "meshca-data") or "meshca-data"),
        help="directory holding the database, CA keys and trust bundle "
             "(env MESHCA_DATA_DIR; default ./meshca-data)",
    )


def kek_file_arg(parser: argparse.ArgumentParser) -> None:
    """For tools that open keys beside a server: the KEK it uses, never a new one."""
    kek_file = env("KEK_FILE")
    parser.add_argument(
        "--kek-file", type=Path, default=Path(kek_file) if kek_file else None,
        help="the server's key-encryption key (default: $MESHCA_KEK, else <data-dir>.kek)")
