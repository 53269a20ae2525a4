"""Every string literal in meshca's source, as the message a user would read.

Adjacent literals are one string to Python (`"a " "b"` is `"a b"`), and an f-string's
placeholders stand as `…`, the way the documentation writes a part that varies.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = "…"


def _text(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_text(part) or PLACEHOLDER for part in node.values)
    return None


@cache
def source_strings(package: str = "meshca") -> tuple[str, ...]:
    found: list[str] = []
    for path in sorted((ROOT / package).rglob("*.py")):
        if "gen" in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.JoinedStr | ast.Constant):
                text = _text(node)
                if text:
                    found.append(text)
    return tuple(found)


def occurs(documented: str) -> bool:
    """True when one literal in meshca's source contains `documented`, where a `…` in the
    documented text stands for any text and the source's own placeholders (an f-string's
    `{…}`, a log call's `%s`) must be written `…` in the documentation too."""
    fragments = [re.escape(" ".join(f.split())) for f in documented.split(PLACEHOLDER)]
    pattern = re.compile(".*?".join(fragments))
    return any(pattern.search(_flat(literal)) for literal in source_strings())


def _flat(literal: str) -> str:
    return " ".join(re.sub(r"%[sdr]", PLACEHOLDER, literal).split())
