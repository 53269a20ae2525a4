"""Durations on the command line (meshca.core.durations), refused as argparse errors."""

from __future__ import annotations

import argparse
from datetime import timedelta

from meshca.core import durations


def parse_duration(text: str) -> timedelta:
    try:
        return durations.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
