"""`meshca admin …`: operate a running meshca through its admin REST API.

Human output is rich tables on stdout (plain text, no colour, when stdout is not a terminal);
`--json` prints the API's JSON instead. Errors are one `meshca: …` line on stderr and exit 1;
argument errors exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from meshca.cli.admin_client import (
    AdminApiError,
    AdminClient,
    AdminClientError,
    normalize_server,
    resolve_target,
)
from meshca.cli.ca_output import ca_status
from meshca.cli.durations import parse_duration
from meshca.core.certificates import Standing, standing
from meshca.core.crl import RevocationReason

Handler = Callable[[AdminClient, argparse.Namespace, "Output"], int]
if TYPE_CHECKING:  # generic only in typeshed, not at run time
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

MAX_LIMIT = 1000  # the API's largest page
ROLES = ("viewer", "operator", "admin")
_SERIAL = re.compile(r"[0-9a-f]{1,40}")
_CN = re.compile(r"(?:^|,)CN=((?:[^,\\]|\\.)*)")
_NON_TTY_WIDTH = 1000  # piped output: never wrap or cut a row


# ---- argument types ---------------------------------------------------------------------

def _serial(text: str) -> str:
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


def _time_or_duration(text: str) -> str:
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


# ---- output -----------------------------------------------------------------------------

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


def _table(*columns: str, caption: str | None = None) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, caption=caption, caption_justify="left",
                  pad_edge=False)
    for name in columns:
        # Serials and IDs are copied into other commands: in a narrow terminal fold them onto
        # more lines, never cut them short with an ellipsis.
        table.add_column(name, overflow="fold")
    return table


def _cell(value: Any, style: str = "") -> Text:
    """Data as plain text (never rich markup: an ID or a reason may contain brackets)."""
    return Text("" if value is None else str(value), style=style)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def short_time(value: Any) -> str:
    """`2026-11-26T00:38:02.645688Z` → `2026-11-26 00:38:02Z` (UTC, whole seconds)."""
    moment = _parse_time(value)
    if moment is None:
        return "" if value is None else str(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _common_name(subject: str) -> str:
    match = _CN.search(subject)
    return match.group(1).replace("\\", "") if match else subject


def _certificate_status(item: dict[str, Any], now: datetime) -> Text:
    not_before, not_after = _parse_time(item.get("not_before")), _parse_time(item.get("not_after"))
    state = standing(not_before=not_before or now, not_after=not_after or now, now=now,
                     revoked=bool(item.get("revoked_at")))
    if state is Standing.REVOKED:
        return Text(f"revoked ({item.get('revocation_reason') or 'unspecified'})", style="red")
    return Text(state.value, style="green" if state is Standing.GOOD else "yellow")


def _plural(count: int, noun: str, nouns: str | None = None) -> str:
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


# ---- commands ---------------------------------------------------------------------------

def _collect(client: AdminClient, path: str, query: dict[str, Any],
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


def _page_query(args: argparse.Namespace) -> dict[str, Any]:
    limit = args.limit if args.limit is not None else (MAX_LIMIT if args.all else None)
    return {"limit": limit, "cursor": args.cursor}


def _more(out: Output, noun: str, cursor: str | None) -> None:
    if cursor:
        out.note(f"there are more {noun}: add --all, or --cursor {cursor}")


def _certs_list(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    query = {"spiffe_id_prefix": args.spiffe_id_prefix, "namespace": args.namespace,
             "service_account": args.service_account, "active": args.active,
             "expiring_before": args.expiring_before, **_page_query(args)}
    items, cursor = _collect(client, "/v1/certificates", query, args.all)
    if out.as_json:
        out.json({"items": items, "next_cursor": cursor})
        return 0
    if not items:
        out.line("no certificates match")
        return 0
    with_pods = any(item.get("pod_name") for item in items)
    columns = ["Serial", "SPIFFE ID", *(["Pod"] if with_pods else []), "Issued", "Expires", "Status"]
    table = _table(*columns, caption=_plural(len(items), "certificate"))
    now = datetime.now(UTC)
    for item in items:
        pod = [_cell(item.get("pod_name"))] if with_pods else []
        table.add_row(_cell(item["serial"]), _cell(item["spiffe_id"]), *pod,
                      _cell(short_time(item["issued_at"])), _cell(short_time(item["not_after"])),
                      _certificate_status(item, now))
    out.table(table)
    _more(out, "certificates", cursor)
    return 0


def _certs_show(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    cert = client.get(f"/v1/certificates/{args.serial}")
    if out.as_json:
        out.json(cert)
        return 0
    if args.pem:
        out.raw(str(cert["certificate_pem"]))
        return 0
    rows: list[tuple[str, Any]] = [
        ("Serial", cert["serial"]),
        ("SPIFFE ID", cert["spiffe_id"]),
        ("Namespace", cert["namespace"]),
        ("Service account", cert["service_account"]),
        ("Pod", cert.get("pod_name")),
        ("Pod UID", cert.get("pod_uid")),
        ("Key type", cert["key_type"]),
        ("SHA-256 fingerprint", cert["fingerprint_sha256"]),
        ("Issuer CA generation", cert["issuer_generation_id"]),
        ("Issued", short_time(cert["issued_at"])),
        ("Valid from", short_time(cert["not_before"])),
        ("Valid until", short_time(cert["not_after"])),
    ]
    if cert.get("revoked_at"):
        rows += [("Revoked at", short_time(cert["revoked_at"])),
                 ("Revocation reason", cert.get("revocation_reason"))]
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, value in rows:
        if value is not None:
            table.add_row(_cell(label), _cell(value))
    table.add_row(_cell("Status"), _certificate_status(cert, datetime.now(UTC)))
    out.table(table)
    return 0


def _certs_revoke(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    cert = client.post(f"/v1/certificates/{args.serial}:revoke", {"reason": args.reason})
    if out.as_json:
        out.json(cert)
        return 0
    out.line(f"revoked {cert['serial']} ({cert['spiffe_id']}): {cert.get('revocation_reason')} "
             f"at {short_time(cert.get('revoked_at'))}")
    return 0


def _identity_path(spiffe_id: str, action: str) -> str:
    return f"/v1/identities/{urllib.parse.quote(spiffe_id, safe='')}:{action}"


def _identities_block(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    data = client.post(_identity_path(args.spiffe_id, "block"), {"reason": args.reason})
    if out.as_json:
        out.json(data)
        return 0
    out.line(f"blocked {args.spiffe_id}: it gets no new certificates until unblocked")
    return 0


def _identities_unblock(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    data = client.post(_identity_path(args.spiffe_id, "unblock"))
    if out.as_json:
        out.json(data)
        return 0
    out.line(f"unblocked {args.spiffe_id}")
    return 0


def _identities_blocked(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    items: list[dict[str, Any]] = client.get("/v1/identities:blocked")
    if out.as_json:
        out.json(items)
        return 0
    if not items:
        out.line("no blocked identities")
        return 0
    table = _table("SPIFFE ID", "Reason", "Blocked by", "Blocked at",
                   caption=_plural(len(items), "blocked identity", "blocked identities"))
    for item in items:
        table.add_row(_cell(item["spiffe_id"]), _cell(item.get("reason")), _cell(item["blocked_by"]),
                      _cell(short_time(item["blocked_at"])))
    out.table(table)
    return 0


def _audit(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    items, cursor = _collect(client, "/v1/audit", _page_query(args), args.all)
    if out.as_json:
        out.json({"items": items, "next_cursor": cursor})
        return 0
    if not items:
        out.line("the audit log is empty")
        return 0
    table = _table("ID", "Time", "Actor", "Action", "Target", "Outcome", "Detail",
                   caption=_plural(len(items), "entry", "entries"))
    for item in items:
        outcome = str(item["outcome"])
        table.add_row(_cell(item["id"]), _cell(short_time(item["at"])), _cell(item["actor"]),
                      _cell(item["action"]), _cell(item["target"]),
                      _cell(outcome, "green" if outcome == "ok" else "red"), _cell(item.get("detail")))
    out.table(table)
    _more(out, "entries", cursor)
    return 0


def _token_create(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    created = client.post("/v1/admin-tokens", {"name": args.name, "role": args.role})
    if out.as_json:
        out.json(created)
        return 0
    # The token alone on stdout (`… > token-file`); the explanation on stderr.
    out.note(f"created admin token {created['name']!r} with role {created['role']}; "
             f"this is the only time it is shown:")
    out.raw(str(created["token"]) + "\n")
    return 0


def _token_revoke(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    data = client.post(f"/v1/admin-tokens/{urllib.parse.quote(args.name, safe='')}:revoke")
    if out.as_json:
        out.json(data)
        return 0
    out.line(f"revoked admin token {args.name}")
    return 0


def _token_list(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    items: list[dict[str, Any]] = client.get("/v1/admin-tokens")
    if out.as_json:
        out.json(items)
        return 0
    table = _table("Name", "Role", "Created by", "Created", "Status",
                   caption=_plural(len(items), "admin token"))
    for item in items:
        revoked = item.get("revoked_at")
        status = (_cell(f"revoked {short_time(revoked)}", "red") if revoked
                  else _cell("active", "green"))
        table.add_row(_cell(item["name"]), _cell(item["role"]), _cell(item["created_by"]),
                      _cell(short_time(item["created_at"])), status)
    out.table(table)
    return 0


# ---- parser -----------------------------------------------------------------------------

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


def _paging(parser: argparse.ArgumentParser, noun: str) -> None:
    parser.add_argument("--limit", type=_limit, metavar="N",
                        help=f"{noun} per page, 1 to {MAX_LIMIT} (default 100)")
    parser.add_argument("--all", action="store_true",
                        help="follow next_cursor to the end (--limit is then the page size)")
    parser.add_argument("--cursor", help="start after this cursor (a next_cursor from --json)")


def add_admin_parser(commands: SubParsers) -> None:
    common = common_options()

    def leaf(group: SubParsers, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        parser = group.add_parser(name, parents=[common], help=help_text, description=help_text)
        parser.set_defaults(admin_handler=handler)
        return parser

    admin = commands.add_parser(
        "admin", help="operate a running meshca through its admin API",
        description="Operate a running meshca through its admin REST API (HTTPS).")
    resources = admin.add_subparsers(dest="admin_command", required=True, metavar="RESOURCE")

    leaf(resources, "ca", ca_status, "CA generations (roots and intermediates); see also `meshca ca`")

    certs = resources.add_parser("certs", help="issued certificates").add_subparsers(
        dest="certs_command", required=True, metavar="ACTION")
    listing = leaf(certs, "list", _certs_list, "list issued certificates, oldest first")
    listing.add_argument("--spiffe-id-prefix", metavar="P", help="only SPIFFE IDs starting with P")
    listing.add_argument("--namespace", metavar="N", help="only namespace N")
    listing.add_argument("--service-account", metavar="S", help="only service account S")
    state = listing.add_mutually_exclusive_group()
    state.add_argument("--active", dest="active", action="store_const", const=True, default=None,
                       help="only unrevoked certificates valid now")
    state.add_argument("--inactive", dest="active", action="store_const", const=False,
                       help="only revoked, expired or not yet valid certificates")
    listing.add_argument("--expiring-before", type=_time_or_duration, metavar="TIME",
                         help="RFC 3339 time (2026-01-01T00:00:00Z) or a duration from now (72h)")
    _paging(listing, "certificates")
    show = leaf(certs, "show", _certs_show, "one certificate in detail")
    show.add_argument("serial", type=_serial, metavar="SERIAL")
    show.add_argument("--pem", action="store_true", help="print only the certificate's PEM")
    revoke = leaf(certs, "revoke", _certs_revoke, "revoke a certificate (there is no undo)")
    revoke.add_argument("serial", type=_serial, metavar="SERIAL")
    reasons = [r.value for r in RevocationReason]
    revoke.add_argument("--reason", required=True, choices=reasons, metavar="REASON",
                        help="RFC 5280 reason: " + ", ".join(reasons))

    identities = resources.add_parser("identities", help="blocked SPIFFE IDs").add_subparsers(
        dest="identities_command", required=True, metavar="ACTION")
    block = leaf(identities, "block", _identities_block, "refuse new certificates for a SPIFFE ID")
    block.add_argument("spiffe_id", metavar="SPIFFE_ID")
    block.add_argument("--reason", default="", help="why, for the record")
    unblock = leaf(identities, "unblock", _identities_unblock, "let a SPIFFE ID get certificates again")
    unblock.add_argument("spiffe_id", metavar="SPIFFE_ID")
    leaf(identities, "blocked", _identities_blocked, "list blocked SPIFFE IDs")

    audit = leaf(resources, "audit", _audit, "the audit log, oldest first")
    _paging(audit, "entries")

    tokens = resources.add_parser("token", help="admin bearer tokens").add_subparsers(
        dest="token_command", required=True, metavar="ACTION")
    create = leaf(tokens, "create", _token_create, "create a token (printed once)")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", required=True)
    revoke_token = leaf(tokens, "revoke", _token_revoke, "revoke a token at once")
    revoke_token.add_argument("name", metavar="NAME")
    leaf(tokens, "list", _token_list, "every token, live or revoked")


# ---- running ----------------------------------------------------------------------------

def _report(error: AdminClientError, stderr: TextIO) -> None:
    print(f"meshca: {error}", file=stderr)
    if isinstance(error, AdminApiError):
        for field_error in error.errors:
            print(f"  {field_error.field}: {field_error.message}", file=stderr)


def run_admin(args: argparse.Namespace, stdout: TextIO | None = None,
              stderr: TextIO | None = None) -> int:
    stderr = stderr or sys.stderr
    env_dir = os.environ.get("MESHCA_DATA_DIR")
    data_dir: Path = args.data_dir or Path(env_dir or "meshca-data")
    handler: Handler = args.admin_handler
    out = Output(args.json, stdout, stderr)
    client: AdminClient | None = None
    try:
        target = resolve_target(data_dir=data_dir, data_dir_given=bool(args.data_dir or env_dir),
                                server=args.server, token_file=args.token_file, ca_file=args.ca_file)
        client = AdminClient(target, args.timeout)
        return handler(client, args, out)
    except AdminClientError as exc:
        _report(exc, stderr)
        if isinstance(exc, AdminApiError) and exc.status == 401 and client and client.token_file:
            print(f"  (the token was read from {client.token_file})", file=stderr)
        return 1
    except (KeyError, TypeError, AttributeError) as exc:
        print(f"meshca: the admin API answered in a shape this client does not know ({exc!r}); "
              f"try --json", file=stderr)
        return 1
    except BrokenPipeError:  # `… | head`: the reader left; say nothing more
        _silence_stdout()
        return 1
    except KeyboardInterrupt:
        return 130


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass

