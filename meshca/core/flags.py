"""How a setting is written down: the flag, environment variable, help and text parser that a
Settings field carries in its metadata, and the parsers those fields share.

Parsers take the text of a flag or environment variable and return the value, or raise
ValueError with a message that names the text (the CLI turns it into an argparse error).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from meshca.core.durations import format_duration, parse_duration
from meshca.core.rate_limit import RateLimit

T = TypeVar("T")
_KEY = "meshca.flag"
ENV_PREFIX = "MESHCA_"


@dataclass(frozen=True, slots=True)
class Flag:
    """One setting on the command line (`--name VALUE`) and in the environment (`MESHCA_NAME`)."""

    name: str  # "--max-ttl"
    help: str  # what it does; the builder adds the default and the environment variable
    group: str
    parse: Callable[[str], Any] | None = None  # None: the text itself
    shown: str | None = None  # the default as help states it; None: written from the value
    repeatable: bool = False  # given once per value; the environment holds a comma-separated list
    switch: bool = False  # no value on the command line; the environment says 1/true/yes or 0/false/no
    blank_is_value: bool = False  # an empty environment variable is a value, not "unset"
    metavar: str | None = None
    choices: tuple[str, ...] | None = None  # the texts allowed, checked before `parse`
    # Between the values of a repeatable flag's variable; another character for values that
    # hold commas themselves (`--federate-with TD=URL,profile=…`).
    env_separator: str = ","

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.removeprefix("--").replace("-", "_").upper()


def flag(name: str, help: str, *, group: str, parse: Callable[[str], Any] | None = None,
         shown: str | None = None, repeatable: bool = False, metavar: str | None = None,
         choices: tuple[str, ...] | None = None,
         blank_is_value: bool | None = None, env_separator: str = ",") -> Mapping[str, Flag]:
    """Field metadata: `field(default=…, metadata=flag("--max-ttl", "…", parse=duration, …))`.

    An empty environment variable counts as unset, except for plain text settings (no parser),
    where "" is a value like any other (`--publish-configmaps ""`: every namespace).
    """
    blank = parse is None and choices is None if blank_is_value is None else blank_is_value
    return {_KEY: Flag(name, help, group, parse, shown, repeatable, False, blank, metavar, choices,
                       env_separator)}


def switch(name: str, help: str, *, group: str) -> Mapping[str, Flag]:
    """A boolean that is off unless the flag is given (or its variable says so)."""
    return {_KEY: Flag(name, help, group, parse=boolean, shown="off", switch=True)}


def flag_of(field: dataclasses.Field[Any]) -> Flag:
    found = field.metadata.get(_KEY)
    if not isinstance(found, Flag):
        raise TypeError(f"setting {field.name} declares no flag")
    return found


def shown_default(spec: Flag, default: object) -> str:
    """The default as a value of the flag (or words for what its absence means)."""
    if spec.shown is not None:
        return spec.shown
    if default is None:
        return "unset"
    if isinstance(default, timedelta):
        return format_duration(default)
    if isinstance(default, RateLimit):
        return default.text
    if isinstance(default, enum.Enum):
        return str(default.value)
    if isinstance(default, tuple):
        return ", ".join(str(item) for item in default) or "none"
    return str(default)


# ---- parsers ---------------------------------------------------------------------------------

def duration(text: str) -> timedelta:
    return parse_duration(text)


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{text!r} is not a positive whole number")
    return int(text)


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise ValueError(f"{text!r} must be a fraction between 0 and 1, e.g. 0.5")
    return value


def path(text: str) -> Path:
    return Path(text)


def rate_limit(text: str) -> RateLimit:
    return RateLimit.parse(text)


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def boolean(text: str) -> bool:
    word = text.strip().lower()
    if word not in _TRUE + _FALSE:
        raise ValueError(f"{text!r} is not a yes or no: use 1/true/yes or 0/false/no")
    return word in _TRUE


def text(value: str) -> str:
    return value


def off_or(parse: Callable[[str], T], *, blank_is_off: bool = False) -> Callable[[str], T | None]:
    """`off` (any case; with `blank_is_off`, nothing at all too) turns the setting off: None."""

    def parse_or_off(value: str) -> T | None:
        if value.strip().lower() == "off" or (blank_is_off and not value):
            return None
        try:
            return parse(value)
        except ValueError as exc:
            raise ValueError(f"{exc}, or off") from None

    return parse_or_off
