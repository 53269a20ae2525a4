"""`meshca admin policies apply | list | get | delete | diff`: the authorization policies stored
through the admin API, handled like `kubectl apply -f` handles manifests."""

from __future__ import annotations

import argparse
import difflib
import sys
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from meshca.cli.admin_args import leaf, resource
from meshca.cli.admin_client import AdminApiError, AdminClient, AdminConfigError
from meshca.cli.render import Output, cell, new_table, plural

if TYPE_CHECKING:
    from meshca.cli.admin_args import SubParsers

COLLECTION = "/v1/authz/policies"
EXIT_DIFFERENT = 1  # as `kubectl diff` and diff(1): 0 same, 1 different, >1 trouble
EXIT_TROUBLE = 2


def _path(namespace: str, name: str) -> str:
    return f"{COLLECTION}/{urllib.parse.quote(namespace, safe='')}/{urllib.parse.quote(name, safe='')}"


def _read(files: list[str]) -> str:
    """The files' text, joined as YAML documents; `-` is standard input."""
    parts = []
    for name in files:
        if name == "-":
            parts.append(sys.stdin.read())
            continue
        try:
            parts.append(Path(name).read_text())
        except OSError as exc:
            raise AdminConfigError(f"cannot read {name}: {exc.strerror or exc}") from None
    return "\n---\n".join(parts)


def _documents(text: str, namespace: str | None) -> list[dict[str, Any]]:
    """The documents as the server will store them (for diff): parsed here only to compare."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise AdminConfigError(f"the policy file is not YAML: {' '.join(str(exc).split())}") from None
    result = []
    for index, document in enumerate(documents):
        meta = document.get("metadata") if isinstance(document, dict) else None
        if not isinstance(meta, dict) or not meta.get("name"):
            raise AdminConfigError(f"document {index} has no metadata.name")
        if not meta.get("namespace"):
            if namespace is None:
                raise AdminConfigError(f"document {index} ({meta['name']}) names no namespace; "
                                       f"pass --namespace")
            document = {**document, "metadata": {**meta, "namespace": namespace}}
        result.append(document)
    return result


def _apply(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    # Sent as written: the server parses YAML (JSON is YAML too) and checks every document
    # before it stores any.
    data = client.post_text(COLLECTION, _read(args.files), "application/yaml",
                            {"namespace": args.namespace})
    if out.as_json:
        out.json(data)
        return 0
    for item in data["applied"]:
        verb = "created" if item["created"] else "configured"
        out.line(f"authorizationpolicy {item['namespace']}/{item['name']} {verb}")
    return 0


def _list(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    data = client.get(COLLECTION)
    policies = [p for p in data["policies"] if args.namespace in (None, p["namespace"])]
    if out.as_json:
        out.json({**data, "policies": policies})
        return 0
    if not policies:
        out.line("no authorization policies")
        return 0
    table = new_table("Namespace", "Name", "Action", "Source",
                      caption=f"{plural(len(policies), 'policy', 'policies')}, "
                              f"set version {data['version']}")
    for policy in policies:
        spec = policy["document"].get("spec") or {}
        table.add_row(cell(policy["namespace"]), cell(policy["name"]),
                      cell(spec.get("action", "ALLOW")), cell(policy.get("source")))
    out.table(table)
    return 0


def _split(text: str) -> tuple[str, str]:
    namespace, _, name = text.partition("/")
    if not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAMESPACE/NAME")
    return namespace, name


def _get(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    data = client.get(_path(*args.policy))
    if out.as_json:
        out.json(data)
        return 0
    out.raw(yaml.safe_dump(data["document"], sort_keys=False))
    return 0


def _delete(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    data = client.delete(_path(*args.policy))
    if out.as_json:
        out.json(data)
        return 0
    namespace, name = args.policy
    out.line(f"authorizationpolicy {namespace}/{name} deleted")
    return 0


def _diff(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    """What `apply` would change, as a unified diff of the stored and the given documents."""
    different = False
    for document in _documents(_read(args.files), args.namespace):
        meta = document["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        try:
            stored = client.get(_path(meta["namespace"], meta["name"]))["document"]
            before = yaml.safe_dump(stored, sort_keys=True).splitlines(keepends=True)
        except AdminApiError as exc:
            if exc.status != 404:
                raise
            before = []
        after = yaml.safe_dump(document, sort_keys=True).splitlines(keepends=True)
        lines = list(difflib.unified_diff(before, after, f"stored/{key}" if before else "/dev/null",
                                          f"file/{key}"))
        if lines:
            different = True
            out.raw("".join(lines))
    return EXIT_DIFFERENT if different else 0


def add_policies_parser(resources: SubParsers, common: argparse.ArgumentParser) -> None:
    policies = resource(resources, common, "policies",
                        "authorization policies stored through the admin API (YAML or JSON, "
                        "like `kubectl apply -f`)", "policies_command")
    def files(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-f", "--filename", dest="files", action="append", required=True,
                            metavar="FILE", help="YAML or JSON file of one or several documents "
                            "(`---` between them); `-` reads standard input (repeatable)")

    namespace_help = "for documents whose metadata names no namespace (default: none; such a " \
                     "document is refused)"
    apply = leaf(policies, common, "apply", _apply,
                 "create or replace every policy in the files (all are checked before any is "
                 "stored)")
    files(apply)
    apply.add_argument("-n", "--namespace", metavar="NS", help=namespace_help)
    listing = leaf(policies, common, "list", _list, "every policy in force, whatever its source")
    listing.add_argument("-n", "--namespace", metavar="NS",
                         help="only this namespace (default: every namespace)")
    get = leaf(policies, common, "get", _get, "one stored policy, as YAML (--json: the API's JSON)")
    get.add_argument("policy", type=_split, metavar="NAMESPACE/NAME", help="which policy")
    delete = leaf(policies, common, "delete", _delete, "delete a stored policy")
    delete.add_argument("policy", type=_split, metavar="NAMESPACE/NAME", help="which policy")
    diff = leaf(policies, common, "diff", _diff,
                f"what apply would change, as a unified diff; exit 0: no change, "
                f"{EXIT_DIFFERENT}: changes, {EXIT_TROUBLE}: trouble")
    files(diff)
    diff.set_defaults(error_exit=EXIT_TROUBLE)
    diff.add_argument("-n", "--namespace", metavar="NS", help=namespace_help)
