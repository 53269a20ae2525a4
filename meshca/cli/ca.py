"""`meshca ca status | prepare | activate | taint`: the CA lifecycle of a running meshca.

`meshca admin ca …` is the same command (an alias: the CA is one of the admin API's
resources); with no action, both show the status. Same connection options as `meshca admin`
(`--data-dir D`, or `--server URL --token-file F`); the changes need the operator role. Exit 0
on success, 1 on a refusal (printed), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from meshca.cli.admin_args import Handler, common_options, leaf
from meshca.cli.admin_client import AdminClient
from meshca.cli.ca_output import print_change, print_status
from meshca.cli.render import Output

if TYPE_CHECKING:
    from meshca.cli.admin_args import SubParsers


def ca_status(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    print_status(client.get("/v1/ca"), out)
    return 0


def _prepare(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    print_change(client.post("/v1/ca:prepare", {"kind": args.kind}), out)
    return 0


def _activate(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    body = {"kind": args.kind, "waive_publish_lead": args.waive_publish_lead}
    print_change(client.post("/v1/ca:activate", body), out)
    return 0


def _taint(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    data = client.post(f"/v1/ca/generations/{args.generation}:taint", {"reason": args.reason})
    print_change(data, out)
    if not out.as_json:
        out.note("certificates under the tainted key can no longer renew with themselves; "
                 "workloads re-authenticate with their tokens at their next renewal")
    return 0


def _generation(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) < 2**31:
        raise argparse.ArgumentTypeError(f"{text!r} is not a CA generation id (see `meshca ca status`)")
    return int(text)


KINDS = ("root", "intermediate", "jwt")


CA_HELP = "the CA's roots, intermediates and JWT-SVID keys: status, prepare, activate, taint"
CA_DESCRIPTION = ("Inspect and steer the CA lifecycle of a running meshca. `meshca ca` and "
                  "`meshca admin ca` are the same command; with no ACTION, both show the status.")


def add_ca_parser(commands: SubParsers, common: argparse.ArgumentParser | None = None) -> None:
    """`ca` and its actions under `commands` (the top level, or `meshca admin`)."""
    common = common or common_options()
    ca = commands.add_parser("ca", parents=[common], help=CA_HELP, description=CA_DESCRIPTION)
    ca.set_defaults(admin_handler=ca_status)
    actions = ca.add_subparsers(dest="ca_command", required=False, metavar="ACTION")

    def action(name: str, handler: Handler, text: str) -> argparse.ArgumentParser:
        return leaf(actions, common, name, handler, text)

    action("status", ca_status, "every generation, its state, and how meshca rotates them")
    prepare = action("prepare", _prepare, "prepare the next root, intermediate or JWT-SVID key "
                     "now (a new root or JWT key is published in the trust bundle at once; "
                     "nothing signs until activated)")
    prepare.add_argument("kind", choices=KINDS, help="which kind of generation")
    activate = action("activate", _activate, "activate the oldest usable prepared generation now")
    activate.add_argument("kind", choices=KINDS, help="which kind of generation")
    activate.add_argument("--waive-publish-lead", action="store_true",
                          help="activate a root or JWT key published for less than the publish "
                               "lead (peers that have not refreshed their bundle will reject what "
                               "it signs; default: refuse)")
    taint = action("taint", _taint, "mark a generation's key compromised and rotate away at once")
    taint.add_argument("generation", type=_generation, metavar="ID",
                       help="the generation's id, as `meshca ca status` lists it")
    taint.add_argument("--reason", default="", help="why, for the audit log (default: none)")
