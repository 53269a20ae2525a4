"""Every `meshca` command line the documentation shows names commands and options that exist:
a renamed flag or sub-command fails here, not in a reader's terminal. So does a flag named in the
configuration reference's tables that `meshca serve` no longer has."""

from __future__ import annotations

import argparse
import re
import shlex

import pytest

from meshca.cli.main import build_parser
from tests.docs.markdown import DOCS, code_blocks

MESHCA = ("meshca", ".venv/bin/meshca", "/opt/meshca/bin/meshca")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for action in parser._actions for o in action.option_strings}


def _takes_value(parser: argparse.ArgumentParser) -> set[str]:
    """Options anywhere in the tree that take a value (`--server URL`): the word after one is its
    value, not a command, since the CLI accepts connection options at any level."""
    found = {o for action in parser._actions if action.nargs != 0 for o in action.option_strings}
    for child in _subparsers(parser).values():
        found |= _takes_value(child)
    return found


def resolve(words: list[str]) -> tuple[list[str], set[str]]:
    """The sub-command path `words` selects and the options valid there (with its parents')."""
    parser, path, valid = build_parser(), ["meshca"], set()
    valid |= _options(parser)
    with_value = _takes_value(parser)
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        if word.startswith("-"):
            skip = "=" not in word and word in with_value
            continue
        subs = _subparsers(parser)
        if not subs:
            continue
        if word not in subs:
            raise LookupError(f"{' '.join(path)} has no command {word!r}")
        parser = subs[word]
        path.append(word)
        valid |= _options(parser)
    return path, valid


def documented_command_lines() -> list[tuple[str, str]]:
    """(page, command line) for every line of a shell block that runs meshca or scripts/run."""
    found = []
    for path in sorted(DOCS.glob("*.md")):
        for block in code_blocks(path.read_text()):
            if block.lang not in ("sh", "bash", "console", ""):
                continue
            for line in block.text.replace("\\\n", " ").splitlines():
                for part in re.split(r"\|\||&&|\||;|\$\(| -- ", line):
                    try:
                        words = shlex.split(part, comments=True)
                    except ValueError:
                        continue
                    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
                        words = words[1:]  # VAR=value before the command
                    if words and (words[0] in MESHCA or words[0] == "scripts/run"):
                        found.append((path.name, shlex.join(words)))
    return found


def _check(line: str) -> list[str]:
    words = shlex.split(line)
    args = ["serve", *words[1:]] if words[0] == "scripts/run" else words[1:]
    path, valid = resolve(args)
    options = [w.split("=", 1)[0] for w in args if w.startswith("--")]
    return [f"{' '.join(path)}: no option {o}" for o in options if o not in valid]


def test_the_pages_show_many_meshca_command_lines() -> None:
    assert len(documented_command_lines()) >= 30


@pytest.mark.parametrize(("page", "line"), documented_command_lines())
def test_a_documented_command_line_is_valid(page: str, line: str) -> None:
    try:
        problems = _check(line)
    except LookupError as exc:
        problems = [str(exc)]
    assert problems == [], f"{page}: {line}"


def test_the_configuration_tables_name_only_real_serve_flags() -> None:
    serve = _subparsers(build_parser())["serve"]
    valid = _options(serve)
    text = (DOCS / "configuration.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `--")]
    named = {flag for row in rows for flag in re.findall(r"`(--[a-z0-9-]+)`", row.split("|")[1])}
    assert len(named) > 60
    assert sorted(named - valid) == []


def test_the_check_catches_a_stale_flag() -> None:
    assert _check("meshca admin certs list --namespace shop --no-such-flag") == [
        "meshca admin certs list: no option --no-such-flag"]
    with pytest.raises(LookupError):
        resolve(["admin", "identities", "list-everything"])
