"""`meshca admin audit`: the audit log, oldest first."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from meshca.cli.admin_args import collect, leaf, more, page_query, paging
from meshca.cli.admin_client import AdminClient
from meshca.cli.render import Output, cell, new_table, plural, short_time

if TYPE_CHECKING:
    from meshca.cli.admin_args import SubParsers


def _audit(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    items, cursor = collect(client, "/v1/audit", page_query(args), args.all)
    if out.as_json:
        out.json({"items": items, "next_cursor": cursor})
        return 0
    if not items:
        out.line("the audit log is empty")
        return 0
    table = new_table("ID", "Time", "Actor", "Action", "Target", "Outcome", "Detail",
                      caption=plural(len(items), "entry", "entries"))
    for item in items:
        outcome = str(item["outcome"])
        table.add_row(cell(item["id"]), cell(short_time(item["at"])), cell(item["actor"]),
                      cell(item["action"]), cell(item["target"]),
                      cell(outcome, "green" if outcome == "ok" else "red"), cell(item.get("detail")))
    out.table(table)
    more(out, "entries", cursor)
    return 0


def add_audit_parser(resources: SubParsers, common: argparse.ArgumentParser) -> None:
    audit = leaf(resources, common, "audit", _audit, "the audit log, oldest first")
    paging(audit, "entries")
