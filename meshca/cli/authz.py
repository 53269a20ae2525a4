"""`meshca authz eval -f policies.yaml --request req.json [--explain] [--json]`: decide a request
against policy files, offline, exactly as the server would.

Exit status: 0 ALLOW, 3 DENY (so scripts can test a policy change), 1 unreadable or invalid
input (every problem on stderr with its file and field path), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshca.authz import (
    AuthorizationPolicy,
    Decision,
    Invalid,
    MeshConfig,
    PolicySet,
    evaluate,
    load_documents,
    parse_policies,
    parse_request,
)
from meshca.service.policy_store import load_policy_dir

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

EXIT_DENY = 3


def add_authz_parser(commands: SubParsers) -> None:
    authz = commands.add_parser("authz", help="authorization policies, offline",
                                description="Evaluate Istio AuthorizationPolicies locally.")
    actions = authz.add_subparsers(dest="authz_command", required=True, metavar="ACTION")
    run = actions.add_parser("eval", help="decide one request against policy files",
                             description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("-f", "--file", dest="files", action="append", type=Path, required=True,
                     metavar="PATH", help="policy file (YAML/JSON) or directory of them (repeatable)")
    run.add_argument("--request", type=Path, required=True, metavar="FILE",
                     help="the request as JSON (or YAML); - for stdin")
    run.add_argument("--explain", action="store_true",
                     help="show every policy considered (default: the decision and its reason)")
    run.add_argument("--json", action="store_true", help="print the answer as JSON (default: text)")
    run.add_argument("--root-namespace", help="mesh root namespace (default istio-system)")
    run.add_argument("--trust-domain", help="mesh trust domain (default cluster.local)")
    run.add_argument("--trust-domain-alias", action="append", dest="aliases", metavar="TD",
                     help="another trust domain the mesh answers to (repeatable; default: none)")


def run_authz(args: argparse.Namespace) -> int:
    try:
        policies = []
        for path in args.files:
            policies.extend(_load(path))
        text = sys.stdin.read() if str(args.request) == "-" else args.request.read_text()
        request, override = parse_request(_decode(text, str(args.request)))
    except Invalid as exc:
        for error in exc.errors:
            print(f"meshca: {error}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"meshca: {exc}", file=sys.stderr)
        return 1
    base = override or MeshConfig()
    mesh = MeshConfig(root_namespace=args.root_namespace or base.root_namespace,
                      trust_domain=args.trust_domain or base.trust_domain,
                      trust_domain_aliases=tuple(args.aliases or base.trust_domain_aliases),
                      extension_providers=base.extension_providers)
    decision = evaluate(PolicySet.build(policies, mesh), request, with_explain=args.explain)
    if args.json:
        answer = decision.to_json()
        if not args.explain:
            answer.pop("explain")
        print(json.dumps(answer, indent=2))
    else:
        _print(decision)
    return 0 if decision.allowed else EXIT_DENY


def _load(path: Path) -> list[AuthorizationPolicy]:
    if path.is_dir():
        return load_policy_dir(path)
    return parse_policies(load_documents(path.read_text(encoding="utf-8"), str(path)),
                          prefix=str(path))


def _decode(text: str, source: str) -> Any:
    documents = load_documents(text, source)
    return documents[0] if len(documents) == 1 else documents


def _print(decision: Decision) -> None:
    by = f"  {decision.policy} rule {decision.rule}" if decision.policy else ""
    print(f"{decision.decision}{by}")
    print(f"reason: {decision.reason}")
    for shadow in decision.dry_run:
        state = f"matched rule {shadow.rule}" if shadow.matched else "did not match"
        print(f"dry-run {shadow.action} {shadow.policy}: {state}; "
              f"enforced, the decision would be {shadow.decision_if_enforced}")
    for entry in decision.explain:
        if not entry.applies:
            print(f"  - {entry.policy} ({entry.action}): does not apply: {entry.note}")
            continue
        state = f"matched rule {entry.rule}" if entry.matched else "no rule matched"
        print(f"  - {entry.policy} ({entry.action}{', dry-run' if entry.dry_run else ''}): {state}")
        for index, miss in enumerate(entry.not_matched):
            if miss is not None:
                print(f"      rule {index}: first mismatch at {miss}")
        if entry.note:
            print(f"      {entry.note}")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m meshca.cli.authz eval …` (the same command as `meshca authz eval …`)."""
    parser = argparse.ArgumentParser(prog="meshca")
    add_authz_parser(parser.add_subparsers(dest="command", required=True))
    return run_authz(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
