"""`meshca serve` flags, and the Settings they make: both read from the fields of Settings."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from meshca.cli.common import add_flags, flag_type, values_from
from meshca.config import GROUPS, Settings


def add_serve_parser(commands: Any) -> None:
    serve = commands.add_parser(
        "serve", help="run the CA",
        description="Run the CA. Every flag can also be set by the environment variable its "
                    "help names (repeatable flags: a comma-separated list); a flag wins over "
                    "its variable.")
    add_flags(serve, Settings, GROUPS)


def settings_from(args: argparse.Namespace) -> Settings:
    """ValueError when the values do not fit together (Settings.__post_init__ says which)."""
    return values_from(args, Settings)


def serve_flag_type(name: str) -> Callable[[str], Any]:
    """How `meshca serve` reads the text of setting `name` (argparse.ArgumentTypeError if bad)."""
    return flag_type(next(f for f in dataclasses.fields(Settings) if f.name == name))
