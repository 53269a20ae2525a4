"""Reading the documentation's Markdown: fenced code blocks, marked blocks, sections."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
_FENCE = re.compile(r"^([ \t]*)```(\w*)\n(.*?)^[ \t]*```", re.M | re.S)
_MARKED = re.compile(r"<!-- test: ([\w-]+) -->\n```(\w*)\n(.*?)^```", re.M | re.S)


@dataclass(frozen=True)
class Block:
    lang: str
    text: str


def page(name: str) -> str:
    return (DOCS / name).read_text()


def marked_blocks(name: str) -> dict[str, Block]:
    """The code blocks right after a `<!-- test: NAME -->` line, by NAME."""
    return {m[1]: Block(m[2], m[3]) for m in _MARKED.finditer(page(name))}


def code_blocks(text: str) -> list[Block]:
    """Fenced blocks, also those indented inside a list item (dedented)."""
    return [Block(m[2], textwrap.dedent(m[3]) if m[1] else m[3]) for m in _FENCE.finditer(text)]


def sections(text: str, level: int = 3) -> dict[str, str]:
    """Heading text (without its `#`s) → the text up to the next heading of that level or above."""
    heading = re.compile(rf"^#{{1,{level}}} (.*)$", re.M)
    found = list(heading.finditer(text))
    out: dict[str, str] = {}
    for i, match in enumerate(found):
        if match.group(0).startswith("#" * level + " "):
            end = found[i + 1].start() if i + 1 < len(found) else len(text)
            out[match[1].strip()] = text[match.end():end]
    return out


def shell_commands(block: Block) -> str:
    """A shell block as a script: comment lines (a command's shown output) dropped."""
    return "\n".join(line for line in block.text.splitlines() if not line.lstrip().startswith("#"))
