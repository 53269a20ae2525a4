"""What to do after a 409: the admin API says why the state refused a change; the CLI adds
the command that gets past it, since only the CLI knows which command the operator typed."""

from __future__ import annotations

import argparse

# (command, words in the API's detail) -> the next step. The first match wins.
_STEPS: tuple[tuple[str, str, str], ...] = (
    ("activate", "is published only from",
     "wait until then, or pass --waive-publish-lead to activate it now (peers that have not "
     "refreshed their trust bundle will reject what it signs)"),
    ("activate", "no prepared", "prepare one first: `meshca ca prepare {kind}`"),
    ("activate", "no active root", "activate a root first: `meshca ca activate root`"),
    ("prepare", "is already prepared",
     "activate it: `meshca ca activate {kind}`, or withdraw it: `meshca ca taint ID --reason …` "
     "(ID from `meshca ca status`)"),
    ("prepare", "", "see `meshca ca status` for the generations there are"),
    ("activate", "", "see `meshca ca status` for the generations there are"),
    ("taint", "", "see `meshca ca status`: only an active or prepared generation can be tainted"),
    ("revoke", "already revoked",
     "nothing to do; `meshca admin certs show {serial}` shows when and why"),
    ("block", "already blocked",
     "nothing to do; `meshca admin identities unblock {spiffe_id}` lifts the block"),
    ("create", "", "pick another --name, or revoke the old token first: "
                   "`meshca admin token revoke NAME`"),
)
_FALLBACK = "look at the current state (the matching `list` or `show` command) and retry"


def next_step(args: argparse.Namespace, detail: str) -> str:
    """The step to suggest after a 409 with `detail`, for the command `args` describe."""
    command = _command(args)
    values = {"kind": getattr(args, "kind", "KIND"), "serial": getattr(args, "serial", "SERIAL"),
              "spiffe_id": getattr(args, "spiffe_id", "SPIFFE_ID")}
    for name, words, step in _STEPS:
        if name == command and words in detail:
            return step.format(**values)
    return _FALLBACK


def _command(args: argparse.Namespace) -> str:
    """The leaf command's name (`activate`, `revoke`, …)."""
    for dest in ("ca_command", "certs_command", "identities_command", "token_command",
                 "policies_command"):
        value = getattr(args, dest, None)
        if value:
            return str(value)
    return ""
