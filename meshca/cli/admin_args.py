"""What `meshca admin` and `meshca ca` commands share: the handler signature, the connection
options, argument types, and paging (its flags and how to follow the cursor)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshca.cli.admin_client import AdminClient, AdminConfigError, normalize_server
from meshca.cli.durations import parse_duration
from meshca.cli.render import Output

Handler = Callable[[AdminClient, argparse.Namespace, Output], int]
if TYPE_CHECKING:  # generic only in typeshed, not at run time
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

MAX_LIMIT = 1000  # the API's largest page
_SERIAL = re.compile(r"[0-9a-f]{1,40}")
MIN_SERIAL_PREFIX = 8  # hex digits: below this a serial is taken as given, never as a prefix
_CANDIDATES_SHOWN = 10


# ---- argument types ---------------------------------------------------------------------

def serial(text: str) -> str:
    """Lower-case hex without leading zeros, as the API lists it, from any common spelling:
    either case, OpenSSL's `AB:CD:…` (or `serial=…` from `openssl x509 -serial`), `0x…`."""
    value = text.strip().lower().removeprefix("serial=").removeprefix("0x").replace(":", "")
    if not _SERIAL.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a certificate serial (hex digits, e.g. as `meshca admin certs list` "
            f"or `openssl x509 -serial` shows it)")
    return value.lstrip("0") or "0"


def resolve_serial(client: AdminClient, value: str) -> str:
    """The full serial that `value` (normalized by `serial`) names: itself, or the one serial
    it begins when it has at least MIN_SERIAL_PREFIX digits. An ambiguous prefix is refused
    with the candidates; an unknown one is left for the API to answer 404."""
    if len(value) < MIN_SERIAL_PREFIX:
        return value
    page = client.get("/v1/certificates", {"serial_prefix": value, "limit": _CANDIDATES_SHOWN + 1})
    # Checked here too: a server that predates the filter lists every certificate.
    found = [str(item["serial"]) for item in page["items"] if str(item["serial"]).startswith(value)]
    if value in found or not found:
        return value
    if len(found) == 1:
        return found[0]
    shown = ", ".join(found[:_CANDIDATES_SHOWN]) + (", …" if len(found) > _CANDIDATES_SHOWN else "")
    raise AdminConfigError(f"serial prefix {value} is ambiguous: it begins {shown}; give more "
                           f"digits")


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

# The connection options and --json, with their defaults. Every level of `meshca admin …` and
# `meshca ca …` accepts them (`meshca admin --server URL certs list` as well as `… list
# --server URL`), so argparse must not let a lower level's default overwrite a value given
# higher up: the options default to "absent" and run_admin fills these in.
CONNECTION_DEFAULTS: dict[str, Any] = {"data_dir": None, "server": None, "token_file": None,
                                       "ca_file": None, "timeout": 30.0, "json": False}


def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    where = common.add_argument_group("connection (the data directory, or --server and --token-file)")
    where.add_argument("--data-dir", type=Path,
                       help="meshca's data directory: the admin address (endpoints.json), the "
                            "admin token and the trust bundle (default $MESHCA_DATA_DIR, else "
                            "./meshca-data)")
    where.add_argument("--server", type=_server, metavar="https://HOST:PORT",
                       help="the admin API's address, instead of the data directory's "
                            "(default: the address in <data-dir>/endpoints.json)")
    where.add_argument("--token-file", type=Path, metavar="FILE",
                       help="file holding an admin token (default: the data directory's admin-token)")
    where.add_argument("--ca-file", type=Path, metavar="BUNDLE",
                       help="PEM bundle to verify the server with (default: the data directory's "
                            "root-cert.pem; with --server alone, the system's trust store)")
    where.add_argument("--timeout", type=_timeout, metavar="SECONDS",
                       help="per request (default 30)")
    common.add_argument("--json", action="store_true",
                        help="print the API's JSON instead of a table (default: a table)")
    return common


def with_connection_defaults(args: argparse.Namespace) -> argparse.Namespace:
    for name, default in CONNECTION_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    return args


def leaf(group: SubParsers, common: argparse.ArgumentParser, name: str, handler: Handler,
         help_text: str, aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """A command that runs `handler` against the admin API, with the connection options."""
    parser = group.add_parser(name, parents=[common], help=help_text, description=help_text,
                              aliases=list(aliases))
    parser.set_defaults(admin_handler=handler)
    return parser


def resource(group: SubParsers, common: argparse.ArgumentParser, name: str, help_text: str,
             dest: str) -> SubParsers:
    """A group of commands (`certs`, `identities`, …); it takes the connection options too."""
    parser = group.add_parser(name, parents=[common], help=help_text, description=help_text)
    return parser.add_subparsers(dest=dest, required=True, metavar="ACTION")


# ---- paging -----------------------------------------------------------------------------

def paging(parser: argparse.ArgumentParser, noun: str) -> None:
    parser.add_argument("--limit", type=_limit, metavar="N",
                        help=f"{noun} per page, 1 to {MAX_LIMIT} (default 100)")
    parser.add_argument("--all", action="store_true",
                        help="follow next_cursor to the end (--limit is then the page size; "
                             "default: one page)")
    parser.add_argument("--cursor", help="start after this cursor (a next_cursor from --json; "
                                         "default: from the start)")


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
