"""Durations as people write them on a command line: 90s, 15m, 24h, 7d, 0.5s, or plain seconds."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")


def parse_duration(text: str) -> timedelta:
    match = _PATTERN.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 15m, 24h or 7d")
    value, unit = match.groups()
    seconds = float(value) * _UNITS[unit or "s"]
    if seconds <= 0:
        raise argparse.ArgumentTypeError("a duration must be positive")
    return timedelta(seconds=seconds)
