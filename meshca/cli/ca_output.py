"""What `meshca ca status` (and `meshca admin ca`) print about the CA generations."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from rich import box
from rich.table import Table

from meshca.cli.admin_client import AdminClient

if TYPE_CHECKING:
    from meshca.cli.admin import Output


def generations_table(generations: list[dict[str, Any]]) -> Table:
    from meshca.cli.admin import _cell, _common_name, _plural, short_time

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, caption_justify="left",
                  caption=_plural(len(generations), "CA generation"))
    for name in ("ID", "Kind", "Parent", "Subject CN", "Serial", "Key", "Not before",
                 "Not after", "State", "Signing", "Bundle"):
        table.add_column(name, overflow="fold")
    for g in generations:
        state = str(g["state"])
        style = {"active": "green", "tainted": "red"}.get(state, "yellow")
        table.add_row(_cell(g["id"]), _cell(g["kind"]), _cell(g.get("parent_id") or "-"),
                      _cell(_common_name(str(g["subject"]))), _cell(g["serial"]),
                      _cell(g["key_type"]), _cell(short_time(g["not_before"])),
                      _cell(short_time(g["not_after"])), _cell(state, style),
                      _cell("yes" if g.get("signing") else "", "bold"),
                      _cell("yes" if g.get("in_bundle") else ""))
    return table


def ca_status(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    from meshca.cli.admin import short_time

    data = client.get("/v1/ca")
    if out.as_json:
        out.json(data)
        return 0
    rotation = data.get("rotation") or {}
    mode = data.get("mode", "meshca")
    if mode == "plugged":
        plugged = data.get("plugged") or {}
        out.line(f"CA: plugged in from {plugged.get('directory')} (meshca rotates nothing)")
        if plugged.get("last_error"):
            out.line(f"  files on disk not in use: {plugged['last_error']}", "red")
    else:
        out.line(f"CA: owned by meshca, rotated automatically (prepare at "
                 f"{rotation.get('prepare_at'):.3g}, activate at {rotation.get('activate_at'):.3g} "
                 f"of a generation's life); next check {short_time(rotation.get('next_check')) or '-'}")
        if rotation.get("last_error"):
            out.line(f"  last rotation pass failed: {rotation['last_error']}", "red")
    out.line(f"trust bundle sequence {data.get('bundle_sequence')}")
    out.table(generations_table(data["generations"]))
    return 0


def print_change(data: dict[str, Any], out: Output) -> None:
    if out.as_json:
        out.json(data)
        return
    for action in data["actions"]:
        target = f" generation {action['generation_id']}" if action.get("generation_id") else ""
        retires = f" (retires {action['retires']})" if action.get("retires") else ""
        out.line(f"{action['action']} {action['kind']}{target}{retires}: {action['reason']}",
                 "bold")
    if not data["actions"]:
        out.line("nothing else was due")
    out.table(generations_table(data["generations"]))
