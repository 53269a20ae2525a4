"""How the CA generations and a CA change (prepare, activate, taint) are printed."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table

from meshca.cli.render import Output, cell, common_name, plural, short_time


def generations_table(generations: list[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, caption_justify="left",
                  caption=plural(len(generations), "CA generation"))
    for name in ("ID", "Kind", "Parent", "Subject CN", "Serial", "Key", "Not before",
                 "Not after", "State", "Signing", "Bundle"):
        table.add_column(name, overflow="fold")
    for g in generations:
        state = str(g["state"])
        style = {"active": "green", "tainted": "red"}.get(state, "yellow")
        table.add_row(cell(g["id"]), cell(g["kind"]), cell(g.get("parent_id") or "-"),
                      cell(common_name(str(g["subject"]))), cell(g["serial"]),
                      cell(g["key_type"]), cell(short_time(g["not_before"])),
                      cell(short_time(g["not_after"])), cell(state, style),
                      cell("yes" if g.get("signing") else "", "bold"),
                      cell("yes" if g.get("in_bundle") else ""))
    return table


def print_status(data: dict[str, Any], out: Output) -> None:
    """`GET /v1/ca`: who owns the CA, how it rotates, and every generation."""
    if out.as_json:
        out.json(data)
        return
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
