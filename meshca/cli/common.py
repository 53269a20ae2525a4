"""Argument helpers shared by the `meshca` sub-commands, and the builder that turns the flag
metadata of a settings dataclass (meshca/core/flags.py) into argparse arguments and back."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from meshca.config import Settings
from meshca.core.flags import Flag, flag_of, shown_default

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def env(name: str, default: str | None = None) -> str | None:
    """`MESHCA_<NAME>` from the environment: every flag's default can come from there."""
    return os.environ.get(f"MESHCA_{name}", default)


class _FromEnv(str):
    """An environment variable's text standing as a flag's default. argparse passes a text
    default through the flag's type once parsing is done, so a bad variable is refused with
    the same one-line error as a bad flag; a repeatable flag splits it at commas (or at its
    own `env_separator`)."""

    __slots__ = ()


class _Repeat(argparse.Action):
    """Each use adds a value; the first replaces whatever the default (or variable) held."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        current = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, [*(current if isinstance(current, list) else []), values])


class _Switch(argparse.Action):
    """Like store_true, but with a type, so that its variable's text is checked like a value."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, True)


def flag_type(field: dataclasses.Field[Any]) -> Callable[[str], Any]:
    """The argparse type of `field`'s flag: its parser, with ValueError as an argparse error."""
    return _converter(flag_of(field))


def _converter(spec: Flag) -> Callable[[str], Any]:
    def one(text: str) -> Any:
        if spec.choices is not None and text not in spec.choices:
            raise ValueError(f"invalid choice: {text!r} (choose from {', '.join(spec.choices)})")
        return spec.parse(text) if spec.parse is not None else text

    def convert(text: str) -> Any:
        try:
            if spec.repeatable and isinstance(text, _FromEnv):
                items = text.split(spec.env_separator)
                return tuple(one(item.strip()) for item in items if item.strip())
            return one(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = spec.name.removeprefix("--")  # argparse names the type in some errors
    return convert


def add_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
             field: dataclasses.Field[Any]) -> None:
    """`field`'s flag, with its default from `MESHCA_<FLAG>` when that is set."""
    spec = flag_of(field)
    default: object = field.default
    text = os.environ.get(spec.env)
    if text is not None and (text or spec.blank_is_value):
        default = _FromEnv(text)
    shown = shown_default(spec, field.default).replace("%", "%%")
    helptext = f"{spec.help.replace('%', '%%')} (default {shown}; env {spec.env})"
    kwargs: dict[str, Any] = {"dest": field.name, "default": default, "help": helptext,
                              "type": _converter(spec)}
    if spec.switch:
        kwargs["action"] = _Switch
    else:
        kwargs["metavar"] = spec.metavar or (
            "{" + ",".join(spec.choices) + "}" if spec.choices
            else spec.name.removeprefix("--").replace("-", "_").upper())
        if spec.repeatable:
            kwargs["action"] = _Repeat
    parser.add_argument(spec.name, **kwargs)


def add_flags(parser: argparse.ArgumentParser, settings_type: type[DataclassInstance],
              groups: Sequence[str] = ()) -> None:
    """One flag per field of the settings dataclass, in help groups (`groups` first, in order)."""
    sections = {title: parser.add_argument_group(title) for title in groups}
    for field in dataclasses.fields(settings_type):
        group = flag_of(field).group
        if group not in sections:
            sections[group] = parser.add_argument_group(group)
        add_flag(sections[group], field)


def values_from(args: argparse.Namespace, settings_type: type[T]) -> T:
    """The settings the parsed flags (and variables) describe; ValueError if they don't fit."""
    values = {}
    for field in dataclasses.fields(settings_type):
        value = getattr(args, field.name)
        values[field.name] = tuple(value) if isinstance(value, list) else value
    return settings_type(**values)


def data_dir_arg(parser: argparse.ArgumentParser) -> None:
    add_flag(parser, _settings_field("data_dir"))


def _settings_field(name: str) -> dataclasses.Field[Any]:
    return next(f for f in dataclasses.fields(Settings) if f.name == name)


def kek_file_arg(parser: argparse.ArgumentParser) -> None:
    """For tools that open keys beside a server: the KEK it uses, never a new one."""
    kek_file = env("KEK_FILE")
    parser.add_argument(
        "--kek-file", type=Path, default=Path(kek_file) if kek_file else None,
        help="the server's key-encryption key (default: $MESHCA_KEK, else <data-dir>.kek)")
