"""The chart's args as `meshca serve` takes them: its parser, then its checks across settings."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from meshca.cli.main import build_parser
from meshca.cli.serve_args import settings_from
from meshca.config import Settings


def parsed_serve_args(args: list[str]) -> argparse.Namespace:
    """Every flag exists and every value parses (a `--federate-with` value into a FlagEntry)."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            parsed = build_parser().parse_args(["serve", *args])
    except SystemExit:
        pytest.fail(f"meshca serve refuses the chart's args: {errors.getvalue().strip()}")
    assert isinstance(parsed, argparse.Namespace)
    return parsed


def serve_settings(args: list[str]) -> Settings:
    """What `meshca serve` starts with. A value set that fails the checks across settings (a
    leaf's longest lifetime against the intermediate's, say) is a chart that installs and never
    starts."""
    try:
        return settings_from(parsed_serve_args(args))
    except ValueError as exc:
        pytest.fail(f"meshca serve would not start with the chart's args: {exc}")
