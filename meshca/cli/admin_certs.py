"""`meshca admin certs list | show | revoke`: issued certificates."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.table import Table

from meshca.cli.admin_args import (
    collect,
    leaf,
    more,
    page_query,
    paging,
    resolve_serial,
    resource,
    serial,
    time_or_duration,
)
from meshca.cli.admin_client import AdminClient
from meshca.cli.render import Output, cell, certificate_status, new_table, plural, short_time
from meshca.core.crl import RevocationReason

if TYPE_CHECKING:
    from meshca.cli.admin_args import SubParsers


def _list(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    query = {"spiffe_id_prefix": args.spiffe_id_prefix, "namespace": args.namespace,
             "service_account": args.service_account, "active": args.active,
             "expiring_before": args.expiring_before, **page_query(args)}
    items, cursor = collect(client, "/v1/certificates", query, args.all)
    if out.as_json:
        out.json({"items": items, "next_cursor": cursor})
        return 0
    if not items:
        out.line("no certificates match")
        return 0
    with_pods = any(item.get("pod_name") for item in items)
    columns = ["Serial", "SPIFFE ID", *(["Pod"] if with_pods else []), "Issued", "Expires", "Status"]
    table = new_table(*columns, caption=plural(len(items), "certificate"))
    now = datetime.now(UTC)
    for item in items:
        pod = [cell(item.get("pod_name"))] if with_pods else []
        table.add_row(cell(item["serial"]), cell(item["spiffe_id"]), *pod,
                      cell(short_time(item["issued_at"])), cell(short_time(item["not_after"])),
                      certificate_status(item, now))
    out.table(table)
    more(out, "certificates", cursor)
    return 0


def _show(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    cert = client.get(f"/v1/certificates/{resolve_serial(client, args.serial)}")
    if out.as_json:
        out.json(cert)
        return 0
    if args.pem:
        out.raw(str(cert["certificate_pem"]))
        return 0
    rows: list[tuple[str, Any]] = [
        ("Serial", cert["serial"]),
        ("SPIFFE ID", cert["spiffe_id"]),
        ("Namespace", cert["namespace"]),
        ("Service account", cert["service_account"]),
        ("Pod", cert.get("pod_name")),
        ("Pod UID", cert.get("pod_uid")),
        ("Key type", cert["key_type"]),
        ("SHA-256 fingerprint", cert["fingerprint_sha256"]),
        ("Issuer CA generation", cert["issuer_generation_id"]),
        ("Issued", short_time(cert["issued_at"])),
        ("Valid from", short_time(cert["not_before"])),
        ("Valid until", short_time(cert["not_after"])),
    ]
    if cert.get("revoked_at"):
        rows += [("Revoked at", short_time(cert["revoked_at"])),
                 ("Revocation reason", cert.get("revocation_reason"))]
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, value in rows:
        if value is not None:
            table.add_row(cell(label), cell(value))
    table.add_row(cell("Status"), certificate_status(cert, datetime.now(UTC)))
    out.table(table)
    return 0


def _revoke(client: AdminClient, args: argparse.Namespace, out: Output) -> int:
    cert = client.post(f"/v1/certificates/{resolve_serial(client, args.serial)}:revoke",
                       {"reason": args.reason})
    if out.as_json:
        out.json(cert)
        return 0
    out.line(f"revoked {cert['serial']} ({cert['spiffe_id']}): {cert.get('revocation_reason')} "
             f"at {short_time(cert.get('revoked_at'))}")
    return 0


_SERIAL_HELP = ("hex, in either case, with or without colons (as `openssl x509 -serial` prints "
                "it), or the first 8 or more digits of one")


def add_certs_parser(resources: SubParsers, common: argparse.ArgumentParser) -> None:
    certs = resource(resources, common, "certs", "issued certificates", "certs_command")
    listing = leaf(certs, common, "list", _list, "list issued certificates, oldest first")
    listing.add_argument("--spiffe-id-prefix", metavar="P",
                         help="only SPIFFE IDs starting with P (default: any)")
    listing.add_argument("--namespace", metavar="N", help="only namespace N (default: any)")
    listing.add_argument("--service-account", metavar="S",
                         help="only service account S (default: any)")
    state = listing.add_mutually_exclusive_group()
    state.add_argument("--active", dest="active", action="store_const", const=True, default=None,
                       help="only unrevoked certificates valid now")
    state.add_argument("--inactive", dest="active", action="store_const", const=False,
                       help="only revoked, expired or not yet valid certificates")
    listing.add_argument("--expiring-before", type=time_or_duration, metavar="TIME",
                         help="only certificates expiring before TIME: an RFC 3339 time "
                              "(2026-01-01T00:00:00Z) or a duration from now (72h) (default: any)")
    paging(listing, "certificates")
    show = leaf(certs, common, "show", _show, "one certificate in detail")
    show.add_argument("serial", type=serial, metavar="SERIAL", help=_SERIAL_HELP)
    show.add_argument("--pem", action="store_true", help="print only the certificate's PEM")
    revoke = leaf(certs, common, "revoke", _revoke, "revoke a certificate (there is no undo)")
    revoke.add_argument("serial", type=serial, metavar="SERIAL", help=_SERIAL_HELP)
    reasons = [r.value for r in RevocationReason]
    revoke.add_argument("--reason", required=True, choices=reasons, metavar="REASON",
                        help="RFC 5280 reason: " + ", ".join(reasons))
