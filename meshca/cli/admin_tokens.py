"""`meshca admin token create | revoke | list`: admin bearer tokens."""

from __future__ import annotations

import argparse
import urllib.parse
from typing import TYPE_CHECKING, Any

from meshca.cli.admin_args import leaf, resource
from meshca.cli.admin_client import AdminClient
from meshca.cli.render import Output, cell, new_table, plural, short_time

if TYPE_CHECKING:
    from meshca.cli.admin_args import SubParsers

ROLES = ("viewer", "operator", "admin")


def _create(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    created = client.post("/v1/admin-tokens", {"name": args.name, "role": args.role})
    if out.as_json:
        out.json(created)
        return 0
    # The token alone on stdout (`… > token-file`); the explanation on stderr.
    out.note(f"created admin token {created['name']!r} with role {created['role']}; "
             f"this is the only time it is shown:")
    out.raw(str(created["token"]) + "\n")
    return 0


def _revoke(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    data = client.post(f"/v1/admin-tokens/{urllib.parse.quote(args.name, safe='')}:revoke")
    if out.as_json:
        out.json(data)
        return 0
    out.line(f"revoked admin token {args.name}")
    return 0


def _list(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    items: list[dict[str, Any]] = client.get("/v1/admin-tokens")
    if out.as_json:
        out.json(items)
        return 0
    table = new_table("Name", "Role", "Created by", "Created", "Status",
                      caption=plural(len(items), "admin token"))
    for item in items:
        revoked = item.get("revoked_at")
        status = (cell(f"revoked {short_time(revoked)}", "red") if revoked
                  else cell("active", "green"))
        table.add_row(cell(item["name"]), cell(item["role"]), cell(item["created_by"]),
                      cell(short_time(item["created_at"])), status)
    out.table(table)
    return 0


def add_token_parser(resources: SubParsers, common: argparse.ArgumentParser) -> None:
    tokens = resource(resources, common, "token", "admin bearer tokens", "token_command")
    create = leaf(tokens, common, "create", _create, "create a token (printed once)")
    create.add_argument("--role", required=True, choices=ROLES,
                        help="what the token may do: " + ", ".join(ROLES))
    create.add_argument("--name", required=True, help="a unique name, to list and revoke it by")
    revoke = leaf(tokens, common, "revoke", _revoke, "revoke a token at once")
    revoke.add_argument("name", metavar="NAME", help="the token's name")
    leaf(tokens, common, "list", _list, "every token, live or revoked")
