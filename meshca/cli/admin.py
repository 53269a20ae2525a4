"""`meshca admin …`: operate a running meshca through its admin REST API.

Human output is rich tables on stdout (plain text, no colour, when stdout is not a terminal);
`--json` prints the API's JSON instead (meshca/cli/render.py). Errors are one `meshca: …` line
on stderr and exit 1; argument errors exit 2. Each resource's commands live in its own module
(admin_certs, admin_identities, admin_audit, admin_tokens; the CA's in ca.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from meshca.cli.admin_args import Handler, common_options, with_connection_defaults
from meshca.cli.admin_audit import add_audit_parser
from meshca.cli.admin_certs import add_certs_parser
from meshca.cli.admin_client import AdminApiError, AdminClient, AdminClientError, resolve_target
from meshca.cli.admin_identities import add_identities_parser
from meshca.cli.admin_policies import add_policies_parser
from meshca.cli.admin_tokens import add_token_parser
from meshca.cli.ca import add_ca_parser
from meshca.cli.conflicts import next_step
from meshca.cli.render import Output

if TYPE_CHECKING:
    from meshca.cli.admin_args import SubParsers


def add_admin_parser(commands: SubParsers) -> None:
    common = common_options()
    admin = commands.add_parser(
        "admin", parents=[common], help="operate a running meshca through its admin API",
        description="Operate a running meshca through its admin REST API (HTTPS). The "
                    "connection options are accepted before or after the command's words.")
    resources = admin.add_subparsers(dest="admin_command", required=True, metavar="RESOURCE")
    add_ca_parser(resources, common)  # the same command as `meshca ca`
    add_certs_parser(resources, common)
    add_identities_parser(resources, common)
    add_policies_parser(resources, common)
    add_audit_parser(resources, common)
    add_token_parser(resources, common)


# ---- running ----------------------------------------------------------------------------

def _report(error: AdminClientError, args: argparse.Namespace, stderr: TextIO) -> None:
    print(f"meshca: {error}", file=stderr)
    if isinstance(error, AdminApiError):
        for field_error in error.errors:
            print(f"  {field_error.field}: {field_error.message}", file=stderr)
        if error.status == 409:
            print(f"  next: {next_step(args, error.detail)}", file=stderr)


def run_admin(args: argparse.Namespace, stdout: TextIO | None = None,
              stderr: TextIO | None = None) -> int:
    """Run the handler a `meshca admin …` or `meshca ca …` command chose."""
    stderr = stderr or sys.stderr
    args = with_connection_defaults(args)
    env_dir = os.environ.get("MESHCA_DATA_DIR")
    data_dir: Path = args.data_dir or Path(env_dir or "meshca-data")
    handler: Handler = args.admin_handler
    failed: int = getattr(args, "error_exit", 1)  # `policies diff` keeps 1 for "different"
    out = Output(args.json, stdout, stderr)
    client: AdminClient | None = None
    try:
        target = resolve_target(data_dir=data_dir, data_dir_given=bool(args.data_dir or env_dir),
                                server=args.server, token_file=args.token_file, ca_file=args.ca_file)
        client = AdminClient(target, args.timeout)
        return handler(client, args, out)
    except AdminClientError as exc:
        _report(exc, args, stderr)
        if isinstance(exc, AdminApiError) and exc.status == 401 and client and client.token_file:
            print(f"  (the token was read from {client.token_file})", file=stderr)
        return failed
    except (KeyError, TypeError, AttributeError) as exc:
        print(f"meshca: the admin API answered in a shape this client does not know ({exc!r}); "
              f"try --json", file=stderr)
        return failed
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
