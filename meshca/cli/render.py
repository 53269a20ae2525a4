"""How `meshca admin` and `meshca ca` print: the API's JSON with `--json`, else rich tables on
stdout (plain text, no colour, when stdout is not a terminal); notes go to stderr.

Rendering only: no requests, no argument parsing.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

_CN = re.compile(r"(?:^|,)CN=((?:[^,\\]|\\.)*)")
_NON_TTY_WIDTH = 1000  # piped output: never wrap or cut a row


class Output:
    """Where results go: JSON or rich tables on stdout, notes on stderr."""

    def __init__(self, as_json: bool, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.as_json = as_json
        self._stdout = stdout or sys.stdout
        self._stderr = stderr or sys.stderr
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            tty = self._stdout.isatty()
            self._console = Console(file=self._stdout, highlight=False,
                                    width=None if tty else _NON_TTY_WIDTH)
        return self._console

    def json(self, data: Any) -> None:
        self._stdout.write(json.dumps(data, indent=2) + "\n")

    def raw(self, text: str) -> None:
        """Exactly this text (a PEM, a token): no wrapping, no styling."""
        self._stdout.write(text)

    def line(self, text: str, style: str = "") -> None:
        self.console.print(Text(text, style=style))

    def table(self, table: Table) -> None:
        console = self.console
        if console.is_terminal:
            console.print(table)
            return
        with console.capture() as captured:  # piped: no padding at line ends
            console.print(table)
        self._stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))

    def note(self, text: str) -> None:
        print(f"meshca: {text}", file=self._stderr)


def new_table(*columns: str, caption: str | None = None) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, caption=caption, caption_justify="left",
                  pad_edge=False)
    for name in columns:
        # Serials and IDs are copied into other commands: in a narrow terminal fold them onto
        # more lines, never cut them short with an ellipsis.
        table.add_column(name, overflow="fold")
    return table


def cell(value: Any, style: str = "") -> Text:
    """Data as plain text (never rich markup: an ID or a reason may contain brackets)."""
    return Text("" if value is None else str(value), style=style)


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def short_time(value: Any) -> str:
    """`2026-11-26T00:38:02.645688Z` → `2026-11-26 00:38:02Z` (UTC, whole seconds)."""
    moment = parse_time(value)
    if moment is None:
        return "" if value is None else str(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def common_name(subject: str) -> str:
    match = _CN.search(subject)
    return match.group(1).replace("\\", "") if match else subject


def certificate_status(item: dict[str, Any], now: datetime) -> Text:
    if item.get("revoked_at"):
        return Text(f"revoked ({item.get('revocation_reason') or 'unspecified'})", style="red")
    not_before, not_after = parse_time(item.get("not_before")), parse_time(item.get("not_after"))
    if not_after is not None and not_after <= now:
        return Text("expired", style="yellow")
    if not_before is not None and not_before > now:
        return Text("not yet valid", style="yellow")
    return Text("active", style="green")


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"
