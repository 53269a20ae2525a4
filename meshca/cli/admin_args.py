"""What `meshca admin` and `meshca ca` commands share: the handler signature, the connection
options, argument types, and paging (its flags and how to follow the cursor)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshca.cli.admin_client import AdminClient, normalize_server
from meshca.cli.durations import parse_duration
from meshca.cli.render import Output

Handler = Callable[[AdminClient, argparse.Namespace, Output], int]
if TYPE_CHECKING:  # generic only in typeshed, not at run time
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

MAX_LIMIT = 1000  # the API's largest page
_SERIAL = re.compile(r"[0-9a-f]{1,40}")


# ---- argument types ---------------------------------------------------------------------

def serial(text: str) -> str:
    """Lower-case hex as the API lists it; also takes OpenSSL's `AB:CD:…` form."""
    value = text.strip().replace(":", "").lower()
    if not _SERIAL.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a certificate serial (hex, as listed)")
    return value


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def _server(text: str) -> str:
    try:
        return normalize_server(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def time_or_duration(text: str) -> str:
    """An RFC 3339 time with a zone, or a duration from now (72h, 7d); sent as UTC `…Z`."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            moment = datetime.now(UTC) + parse_duration(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is neither an RFC 3339 time (2026-01-01T00:00:00Z) "
                f"nor a duration from now (72h, 7d)") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} needs a time zone, e.g. {text.strip()}Z or {text.strip()}+02:00")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


# ---- parsers ----------------------------------------------------------------------------

def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("connection (the data directory, or --server and --token-file)")
    where.add_argument("--data-dir", type=Path, default=None,
                       help="meshca's data directory: the admin address (endpoints.json), the "
                            "admin token and the trust bundle (env MESHCA_DATA_DIR; "
                            "default ./meshca-data)")
    where.add_argument("--server", type=_server, metavar="https://HOST:PORT",
                       help="the admin API's address, instead of the data directory's")
    where.add_argument("--token-file", type=Path, metavar="FILE",
                       help="file holding an admin token (default: the data directory's admin-token)")
    where.add_argument("--ca-file", type=Path, metavar="BUNDLE",
                       help="PEM bundle to verify the server with (default: the data directory's "
                            "root-cert.pem; with --server alone, the system's trust store)")
    where.add_argument("--timeout", type=_timeout, default=30.0, metavar="SECONDS",
                       help="per request (default 30)")
    common.add_argument("--json", action="store_true",
                        help="print the API's JSON instead of a table")
    return common


def leaf(group: SubParsers, common: argparse.ArgumentParser, name: str, handler: Handler,
         help_text: str) -> argparse.ArgumentParser:
    """A command that runs `handler` against the admin API, with the connection options."""
    parser = group.add_parser(name, parents=[common], help=help_text, description=help_text)
    parser.set_defaults(admin_handler=handler)
    return parser


# ---- paging -----------------------------------------------------------------------------

def paging(parser: argparse.ArgumentParser, noun: str) -> None:
    parser.add_argument("--limit", type=_limit, metavar="N",
                        help=f"{noun} per page, 1 to {MAX_LIMIT} (default 100)")
    parser.add_argument("--all", action="store_true",
                        help="follow next_cursor to the end (--limit is then the page size)")
    parser.add_argument("--cursor", help="start after this cursor (a next_cursor from --json)")


def page_query(args: argparse.Namespace) -> dict[str, Any]:
    limit = args.limit if args.limit is not None else (MAX_LIMIT if args.all else None)
    return {"limit": limit, "cursor": args.cursor}


def collect(client: AdminClient, path: str, query: dict[str, Any],
            walk_all: bool) -> tuple[list[dict[str, Any]], str | None]:
    """The items of one page, or of every page with --all; and the cursor left, if any."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for page in client.pages(path, query):
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not walk_all:
            break
    return items, cursor


def more(out: Output, noun: str, cursor: str | None) -> None:
    if cursor:
        out.note(f"there are more {noun}: add --all, or --cursor {cursor}")
