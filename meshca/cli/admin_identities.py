"""`meshca admin identities block | unblock | blocked`: SPIFFE IDs refused new certificates."""

from __future__ import annotations

import argparse
import urllib.parse
from typing import TYPE_CHECKING, Any

from meshca.cli.admin_args import leaf, resource
from meshca.cli.admin_client import AdminClient
from meshca.cli.render import Output, cell, new_table, plural, short_time

if TYPE_CHECKING:
    from meshca.cli.admin_args import SubParsers


def _identity_path(spiffe_id: str, action: str) -> str:
    return f"/v1/identities/{urllib.parse.quote(spiffe_id, safe='')}:{action}"


def _block(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    data = client.post(_identity_path(args.spiffe_id, "block"), {"reason": args.reason})
    if out.as_json:
        out.json(data)
        return 0
    out.line(f"blocked {args.spiffe_id}: it gets no new certificates until unblocked")
    return 0


def _unblock(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    data = client.post(_identity_path(args.spiffe_id, "unblock"))
    if out.as_json:
        out.json(data)
        return 0
    out.line(f"unblocked {args.spiffe_id}")
    return 0


def _blocked(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    items: list[dict[str, Any]] = client.get("/v1/identities:blocked")
    if out.as_json:
        out.json(items)
        return 0
    if not items:
        out.line("no blocked identities")
        return 0
    table = new_table("SPIFFE ID", "Reason", "Blocked by", "Blocked at",
                      caption=plural(len(items), "blocked identity", "blocked identities"))
    for item in items:
        table.add_row(cell(item["spiffe_id"]), cell(item.get("reason")), cell(item["blocked_by"]),
                      cell(short_time(item["blocked_at"])))
    out.table(table)
    return 0


def add_identities_parser(resources: SubParsers, common: argparse.ArgumentParser) -> None:
    identities = resource(resources, common, "identities",
                          "SPIFFE IDs refused new certificates (blocked); their certificates are "
                          "under `meshca admin certs`", "identities_command")
    # `list`, like `certs list`: the identities meshca keeps a record of are the blocked ones.
    leaf(identities, common, "list", _blocked, "list blocked SPIFFE IDs", aliases=("blocked",))
    block = leaf(identities, common, "block", _block, "refuse new certificates for a SPIFFE ID")
    block.add_argument("spiffe_id", metavar="SPIFFE_ID", help="e.g. spiffe://cluster.local/ns/N/sa/S")
    block.add_argument("--reason", default="", help="why, for the record (default: none)")
    unblock = leaf(identities, common, "unblock", _unblock, "let a SPIFFE ID get certificates again")
    unblock.add_argument("spiffe_id", metavar="SPIFFE_ID", help="a blocked SPIFFE ID")
