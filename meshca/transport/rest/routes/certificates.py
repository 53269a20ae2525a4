"""Issued certificates: inventory, revocation, and the CRL."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated, Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from meshca.core.crl import Revocation, RevocationReason, build_crl
from meshca.infra.db.inventory import CertificateFilter, NotFound, Position
from meshca.transport.rest.context import Context
from meshca.transport.rest.models import (
    CertificateDetailOut,
    CertificateOut,
    CertificatePage,
    RevokeIn,
)
from meshca.transport.rest.problems import BadRequest

router = APIRouter(tags=["certificates"])
SERIAL = r"^[0-9a-f]{1,40}$"
PKIX_CRL = "application/pkix-crl"
PEM = "application/x-pem-file"


def encode_cursor(row: dict[str, Any]) -> str:
    issued_at = row["issued_at"]
    assert isinstance(issued_at, datetime)
    raw = json.dumps({"t": issued_at.isoformat(), "s": row["serial"]}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        position = Position(datetime.fromisoformat(data["t"]), str(data["s"]))
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("cursor is not one this API returned") from None
    if position.issued_at.tzinfo is None:
        raise BadRequest("cursor is not one this API returned")
    return position


@router.get("/v1/certificates", response_model=CertificatePage)
def list_certificates(
    context: Context,
    spiffe_id_prefix: Annotated[str | None, Query(max_length=2048)] = None,
    namespace: Annotated[str | None, Query(max_length=253)] = None,
    service_account: Annotated[str | None, Query(max_length=253)] = None,
    active: Annotated[bool | None, Query(description="unrevoked and valid now")] = None,
    expiring_before: Annotated[datetime | None, Query(description="RFC 3339 time")] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> CertificatePage:
    """Issued certificates in issue order (stable), `limit` at a time."""
    if expiring_before is not None and expiring_before.tzinfo is None:
        raise BadRequest("expiring_before needs a time zone (e.g. 2026-01-01T00:00:00Z)")
    where = CertificateFilter(spiffe_id_prefix, namespace, service_account, active, expiring_before)
    after = decode_cursor(cursor) if cursor else None
    rows = context.inventory.page(where, after, limit + 1, context.clock.now())
    page, more = rows[:limit], len(rows) > limit
    return CertificatePage(items=[CertificateOut.model_validate(r) for r in page],
                           next_cursor=encode_cursor(page[-1]) if more else None)


@router.get("/v1/certificates/{serial}", response_model=CertificateDetailOut)
def get_certificate(context: Context, serial: Annotated[str, Path(pattern=SERIAL)]) -> Any:
    """One certificate with its PEM. `serial` is lower-case hex, as listed."""
    return CertificateDetailOut.model_validate(context.inventory.get(serial))


@router.post("/v1/certificates/{serial}:revoke", response_model=CertificateOut)
def revoke_certificate(request: Request, context: Context, body: RevokeIn,
                       serial: Annotated[str, Path(pattern=SERIAL)]) -> Any:
    """Revoke: the certificate can no longer renew itself and appears in its issuer's CRL."""
    audit = context.audit(request, "certificate.revoke", serial, detail=body.reason.value)
    context.inventory.revoke(serial, body.reason.value, audit)
    return CertificateOut.model_validate(context.inventory.get(serial))


@router.get("/v1/crl", response_class=Response, responses={200: {"content": {
    PEM: {"schema": {"type": "string"}}, PKIX_CRL: {"schema": {"type": "string", "format": "binary"}}},
    "description": "the CRL"}})
def crl(request: Request, context: Context,
        issuer: Annotated[int | None, Query(ge=1, description="CA generation id")] = None) -> Response:
    """The CRL of the signing intermediate (or of generation `issuer`), signed by that CA.
    DER with `Accept: application/pkix-crl`, PEM otherwise."""
    authority = context.authority()
    generation = next((g for g in context.ca.all()
                       if g.id == (issuer or (authority.generation_id if authority else -1))), None)
    if generation is None or generation.kind != "intermediate":
        raise NotFound(f"intermediate CA generation {issuer}")
    now = context.clock.now()
    entries = [Revocation(int(e.serial, 16), e.revoked_at, RevocationReason(e.reason))
               for e in context.inventory.revoked_by(generation.id, now)]
    issuer_cert = x509.load_pem_x509_certificate(generation.certificate_pem.encode())
    revocation_list = build_crl(issuer_cert, context.keys.load(generation.key_location), entries, now)
    if PKIX_CRL in request.headers.get("accept", ""):
        return Response(revocation_list.public_bytes(Encoding.DER), media_type=PKIX_CRL)
    return Response(revocation_list.public_bytes(Encoding.PEM), media_type=PEM)
