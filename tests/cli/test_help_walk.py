"""Every option of every `meshca` parser explains itself: it has help text, and an option
that takes a value and has a default says what the default is."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator

from meshca import __version__
from meshca.cli.main import build_parser


def _parsers(parser: argparse.ArgumentParser, path: str = "meshca",
             ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, child in action.choices.items():
                if id(child) not in seen:  # an alias names the same parser
                    seen.add(id(child))
                    yield from _parsers(child, f"{path} {name}")


def _problems(top: argparse.ArgumentParser) -> list[str]:
    problems = []
    for path, parser in _parsers(top):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            name = "/".join(action.option_strings) or action.dest
            text = action.help or ""
            if not text.strip() or text == argparse.SUPPRESS:
                problems.append(f"{path} {name}: no help text")
                continue
            takes_value = action.nargs != 0
            has_default = action.default not in (None, False, argparse.SUPPRESS, [], ())
            if (action.option_strings and takes_value and has_default and not action.required
                    and "default" not in text.lower()):
                problems.append(f"{path} {name}: help does not show its default "
                                f"({action.default!r})")
    return problems


def test_every_option_of_every_parser_has_help_with_its_default() -> None:
    assert _problems(build_parser()) == []


def test_the_walk_sees_every_command() -> None:
    paths = {path for path, _ in _parsers(build_parser())}
    assert {"meshca serve", "meshca agent", "meshca request", "meshca dev token",
            "meshca admin certs revoke", "meshca admin ca activate", "meshca ca taint",
            "meshca admin identities list", "meshca admin policies apply",
            "meshca authz eval"} <= paths
    assert len(paths) > 25


def test_the_walk_would_fail_on_an_option_without_help_or_default() -> None:
    """The check itself can fail, at the top and deep down."""
    parser = build_parser()
    parser.add_argument("--bare", default="x")
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    certs = commands.choices["admin"]._actions[-1].choices["certs"]
    leaf = certs._actions[-1].choices["list"]
    leaf.add_argument("--quiet-default", default=5, help="says nothing of it")
    assert _problems(parser) == [
        "meshca --bare: no help text",
        "meshca admin certs list --quiet-default: help does not show its default (5)"]


def test_version() -> None:
    done = subprocess.run([sys.executable, "-m", "meshca", "--version"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (0, f"meshca {__version__}\n")


def test_serve_help_shows_defaults_of_the_flags_a_new_user_meets() -> None:
    done = subprocess.run([sys.executable, "-m", "meshca", "serve", "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0
    text = " ".join(done.stdout.split("options:", 1)[1].split())  # argparse wraps help lines
    for flag, default in (("--grpc-addr", "127.0.0.1:15012"), ("--trust-domain", "cluster.local"),
                          ("--log-level", "info")):
        after = text.split(f"{flag} ", 1)[1].split(" --", 1)[0]
        assert f"default {default}" in after.lower(), (flag, after)
