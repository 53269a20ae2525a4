"""`meshca serve | agent | request | dev token | admin … | ca … | authz eval`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from meshca import __version__, logs
from meshca.cli.admin import add_admin_parser
from meshca.cli.agent_args import add_agent_parser, agent_settings_from
from meshca.cli.authz import add_authz_parser
from meshca.cli.ca import add_ca_parser
from meshca.cli.common import data_dir_arg, kek_file_arg
from meshca.cli.durations import parse_duration
from meshca.cli.serve_args import add_serve_parser, settings_from
from meshca.errors import ConfigurationError, MeshcaError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshca", description="Workload-identity CA for meshes")
    parser.add_argument("--version", action="version", version=f"meshca {__version__}",
                        help="print meshca's version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_serve_parser(commands)
    add_agent_parser(commands)

    request = commands.add_parser("request", help="get a workload certificate, as a sidecar would")
    data_dir_arg(request)
    request.add_argument("--namespace", required=True, help="the workload's Kubernetes namespace")
    request.add_argument("--service-account", required=True,
                         help="the workload's service account")
    request.add_argument("--out", type=Path, required=True, metavar="DIR",
                         help="directory to write cert-chain.pem, key.pem and root-cert.pem to")
    request.add_argument("--addr", default=None, metavar="HOST:PORT",
                         help="meshca's gRPC address (default: the one in <data-dir>/endpoints.json, "
                              "else localhost:15012)")
    request.add_argument("--token-file", type=Path, metavar="FILE",
                         help="service-account token (default: a development token minted with "
                              "the data dir's development issuer)")
    request.add_argument("--ttl", type=parse_duration, metavar="DURATION",
                         help="requested lifetime, e.g. 1h (default: the server's --default-ttl)")
    kek_file_arg(request)
    request.add_argument("--server-name", default="localhost", metavar="NAME",
                         help="name to verify in meshca's certificate (default localhost)")

    dev = commands.add_parser("dev", help="development helpers")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True)
    token = dev_commands.add_parser("token", help="print a development service-account token")
    data_dir_arg(token)
    token.add_argument("--namespace", required=True, help="the token's Kubernetes namespace")
    token.add_argument("--service-account", required=True, help="the token's service account")
    token.add_argument("--audience", action="append", dest="audiences", metavar="AUD",
                       help="an audience (repeatable; default istio-ca)")
    token.add_argument("--ttl", type=parse_duration, default=parse_duration("1h"),
                       metavar="DURATION", help="lifetime (default 1h)")
    token.add_argument("--pod-name", metavar="NAME",
                       help="bind the token to this pod (default: no pod claim)")
    token.add_argument("--node-name", metavar="NAME",
                       help="bind the token to this node (default: no node claim)")
    kek_file_arg(token)

    add_admin_parser(commands)
    add_ca_parser(commands)
    add_authz_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        try:
            settings = settings_from(args)
        except ValueError as exc:
            print(f"meshca: {exc}", file=sys.stderr)
            return 2
        logs.configure(settings.log_level, settings.log_format)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        from meshca.wiring.serve import serve
        from meshca.wiring.startup import check_files

        try:
            check_files(settings)  # before Vault is dialled: a missing file is the operator's fix
        except ConfigurationError as exc:
            print(f"meshca: cannot start: {exc}", file=sys.stderr)
            return 2

        return _run(lambda: serve(settings))
    if args.command == "agent":
        try:
            agent_settings = agent_settings_from(args)
        except ValueError as exc:
            print(f"meshca agent: {exc}", file=sys.stderr)
            return 2
        logs.configure(agent_settings.log_level)
        from meshca.wiring.agent import run_agent

        return _run(lambda: run_agent(agent_settings))
    if args.command == "request":
        from meshca.cli.request import run_request

        return run_request(args)
    if args.command == "authz":
        from meshca.cli.authz import run_authz

        return run_authz(args)
    if args.command in ("admin", "ca"):
        from meshca.cli.admin import run_admin

        return run_admin(args)
    if args.command == "dev":
        from meshca.infra.dev_issuer import DevIssuer
        from meshca.infra.keyfiles import KeyFileError

        try:
            issuer = DevIssuer.load(args.data_dir, kek_file=args.kek_file)
        except (FileNotFoundError, KeyFileError) as exc:
            print(f"meshca: {exc}", file=sys.stderr)
            return 1
        print(issuer.token(args.namespace, args.service_account,
                           audiences=args.audiences or ["istio-ca"],
                           ttl_seconds=int(args.ttl.total_seconds()),
                           pod_name=args.pod_name, node_name=args.node_name))
        return 0
    return 2


def _run(start: Callable[[], Coroutine[Any, Any, None]]) -> int:
    try:
        asyncio.run(start())
    except (MeshcaError, ValueError, OSError) as exc:
        # Said without a traceback. A configuration the process cannot start with exits 2, as
        # a bad flag does, since only the operator can fix it; a worker that failed to start
        # exits 1, as one that dies later does, so that a supervisor restarts the whole.
        from meshca.infra.supervision import WorkerStartError

        logging.getLogger("meshca").debug("start-up failed", exc_info=True)
        print(f"meshca: cannot start: {_one_line(exc)}", file=sys.stderr)
        return 1 if isinstance(exc, WorkerStartError) else 2
    return 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
