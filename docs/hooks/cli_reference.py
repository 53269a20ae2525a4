"""The CLI reference page, written from meshca's own argparse parser.

MkDocs runs this as a hook (mkdocs.yml `hooks:`): every build renders `cli-reference.md` afresh
from `meshca.cli.main.build_parser()`, so the page cannot fall behind the parser. Run as a
script (`scripts/gen-cli-docs [FILE]`) it prints the same Markdown, to read or diff it.
"""

from __future__ import annotations

import argparse
import html
import re
import sys
from collections.abc import Iterator
from typing import Any

PAGE = "cli-reference.md"
WIDTH = 80  # usage lines are wrapped to this (the page's code width), whatever the terminal


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("meshca",), summary: str = "",
             ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """Every (command path, parser, one-line help) in the tree, depth first, parents first; an
    alias (a second name for the same parser) is not repeated."""
    yield path, parser, summary or parser.description or ""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield from commands(sub, (*path, name), helps.get(name, ""))


def _text(value: str) -> str:
    """Help text for a Markdown table cell: HTML-escaped outside `code`, pipes escaped."""
    parts = re.split(r"(`[^`]*`)", " ".join(value.split()))
    out = "".join(p if p.startswith("`") else html.escape(p, quote=False) for p in parts)
    return out.replace("|", "\\|")


def _option(action: argparse.Action, formatter: argparse.HelpFormatter) -> str:
    if action.option_strings:
        names = ", ".join(action.option_strings)
        if action.nargs != 0:
            names += " " + formatter._format_args(action, action.dest.upper())
    else:
        names = formatter._metavar_formatter(action, action.dest)(1)[0]
    return f"`{names}`"


def _help(action: argparse.Action, formatter: argparse.HelpFormatter) -> str:
    text = formatter._expand_help(action) if action.help else ""
    if action.required and action.option_strings:
        text = f"(required) {text}".strip()
    return _text(text) or "&nbsp;"


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(prog=parser.prog, width=WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _section(path: tuple[str, ...], parser: argparse.ArgumentParser, summary: str) -> list[str]:
    formatter = argparse.HelpFormatter(prog=parser.prog, width=WIDTH)
    lines = [f"## {' '.join(path)}", ""]
    if summary:
        lines += [_text(summary), ""]
    if parser.description and parser.description != summary:
        lines += [_text(parser.description), ""]
    lines += ["```text", _usage(parser), "```", ""]
    subs: list[tuple[str, str]] = []
    rows: list[tuple[str, str]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            subs += [(c.dest, c.help or "") for c in action._choices_actions]
        elif action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction):
            rows.append((_option(action, formatter), _help(action, formatter)))
    if subs:
        lines += ["| command | what it does |", "| --- | --- |"]
        lines += [f"| [`{' '.join((*path, name))}`](#{_anchor((*path, name))}) | {_text(text) or '&nbsp;'} |"
                  for name, text in subs]
        lines.append("")
    if rows:
        lines += ["| option | meaning |", "| --- | --- |"]
        lines += [f"| {name} | {text} |" for name, text in rows]
        lines.append("")
    return lines


def _anchor(path: tuple[str, ...]) -> str:
    """The id MkDocs' toc extension gives the heading `## meshca a b`."""
    return "-".join(path)


def render() -> str:
    from meshca.cli.main import build_parser

    lines = [
        "# CLI reference",
        "",
        "Every `meshca` command and option, generated from the command's own parser each time",
        "this site is built (`docs/hooks/cli_reference.py`; `scripts/gen-cli-docs` prints it).",
        "`meshca COMMAND --help` shows the same in a terminal. Every `meshca serve` flag can also",
        "be set as `MESHCA_<FLAG>`; see [Configuration](configuration.md).",
        "",
    ]
    for path, parser, summary in commands(build_parser()):
        lines += _section(path, parser, summary)
    return "\n".join(lines)


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: add the generated page to the site's files."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render()))
    return files


if __name__ == "__main__":
    text = render()
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
