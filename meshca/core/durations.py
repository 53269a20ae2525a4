"""Durations as people write them on a command line: 90s, 15m, 24h, 7d, 0.5s, or plain seconds."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")


def parse_duration(text: str) -> timedelta:
    """A positive duration; ValueError naming the text otherwise."""
    match = _PATTERN.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 24h or 7d")
    value, unit = match.groups()
    seconds = float(value) * _UNITS[unit or "s"]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return timedelta(seconds=seconds)


def format_duration(span: timedelta) -> str:
    """The largest unit that writes `span` exactly (`7d`, `28h`, `0.5s`): parse_duration's inverse."""
    seconds = span.total_seconds()
    for unit in ("d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:.15g}s"


def describe_duration(span: timedelta) -> str:
    """`1d 4h`, `1d 0h 0m 5s` as `1d 5s`: for messages, each part a valid flag value."""
    days, seconds = span.days, span.seconds
    parts = [f"{days}d"] if days else []
    parts += [f"{seconds // 3600}h"] if seconds // 3600 else []
    parts += [f"{seconds % 3600 // 60}m"] if seconds % 3600 // 60 else []
    parts += [f"{seconds % 60}s"] if seconds % 60 else []
    return " ".join(parts) or "0s"
