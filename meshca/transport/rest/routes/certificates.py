"""Issued certificates: inventory, revocation, and the CRL."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime
from typing import Annotated, Any

from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope

from meshca.service.admin_ports import CertificateFilter, Position
from meshca.transport.rest.dependencies import Actor, Certificates
from meshca.transport.rest.models import (
    NO_NUL,
    CertificateDetailOut,
    CertificateOut,
    CertificatePage,
    RevokeIn,
    Rfc3339Time,
)
from meshca.transport.rest.problems import BadRequest, problem_responses

SERIAL = r"^[0-9a-f]{1,40}$"
PKIX_CRL = "application/pkix-crl"
PEM = "application/x-pem-file"


class _NotAVerb(APIRoute):
    """`/v1/certificates/{serial}` leaves `/v1/certificates/<serial>:<verb>` to the verb's route.

    A serial never holds ':', so such a path names an action, not a certificate: GET on
    `…:revoke` is then 405 (Allow: POST) rather than "invalid serial '0:revoke'"."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE and ":" in str(child.get("path_params", {}).get("serial", "")):
            return Match.NONE, {}
        return match, child


router = APIRouter(tags=["certificates"], route_class=_NotAVerb)
SerialPath = Annotated[str, Path(
    pattern=SERIAL, description="lower-case hex, as listed",
    openapi_examples={"serial": {"value": "3d26253c603d8bba2a2eadbfb4bd68d99d71716d"}})]
_NO_CERTIFICATE = {404: "no certificate has this serial"}


def encode_cursor(position: Position) -> str:
    raw = json.dumps({"t": position.issued_at.isoformat(), "s": position.serial}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        position = Position(datetime.fromisoformat(data["t"]), str(data["s"]))
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("cursor is not one this API returned") from None
    # Hex like every serial issued, which also keeps NUL from PostgreSQL.
    if position.issued_at.tzinfo is None or not re.fullmatch(SERIAL, position.serial):
        raise BadRequest("cursor is not one this API returned")
    return position


@router.get("/v1/certificates", response_model=CertificatePage,
            responses=problem_responses(400, 422, meanings={400: "`cursor` is not one this API returned"}))
def list_certificates(
    certificates: Certificates,
    spiffe_id_prefix: Annotated[str | None, Query(max_length=2048, pattern=NO_NUL)] = None,
    namespace: Annotated[str | None, Query(max_length=253, pattern=NO_NUL)] = None,
    service_account: Annotated[str | None, Query(max_length=253, pattern=NO_NUL)] = None,
    active: Annotated[bool | None, Query(description="unrevoked and valid now")] = None,
    expiring_before: Annotated[Rfc3339Time | None, Query(description="RFC 3339 time")] = None,
    serial_prefix: Annotated[str | None, Query(
        pattern=SERIAL, description="only serials starting with these lower-case hex digits "
        "(how the CLI resolves a serial typed short)")] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> CertificatePage:
    """Issued certificates in issue order (stable), `limit` at a time."""
    where = CertificateFilter(spiffe_id_prefix, namespace, service_account, active, expiring_before,
                              serial_prefix)
    after = decode_cursor(cursor) if cursor else None
    page = certificates.page(where, after, limit)
    return CertificatePage(
        items=[CertificateOut.model_validate(c, from_attributes=True) for c in page.items],
        next_cursor=encode_cursor(page.next_after) if page.next_after else None)


@router.get("/v1/certificates/{serial}", response_model=CertificateDetailOut,
            responses=problem_responses(404, 422, meanings=_NO_CERTIFICATE))
def get_certificate(certificates: Certificates, serial: SerialPath) -> Any:
    """One certificate with its PEM. `serial` is lower-case hex, as listed."""
    return CertificateDetailOut.model_validate(certificates.get(serial), from_attributes=True)


@router.post("/v1/certificates/{serial}:revoke", response_model=CertificateOut,
             responses=problem_responses(400, 404, 409, 422, meanings={
                 **_NO_CERTIFICATE, 409: "the certificate is already revoked"}))
def revoke_certificate(certificates: Certificates, actor: Actor, body: RevokeIn,
                       serial: SerialPath) -> Any:
    """Revoke: the certificate can no longer renew itself and appears in its issuer's CRL."""
    revoked = certificates.revoke(serial, body.reason, actor)
    return CertificateOut.model_validate(revoked, from_attributes=True)


@router.get("/v1/crl", response_class=Response, responses={
    200: {"content": {PEM: {"schema": {"type": "string"}},
                      PKIX_CRL: {"schema": {"type": "string", "format": "binary"}}},
          "description": "the CRL"},
    **problem_responses(404, 422, meanings={404: "no intermediate CA generation has this id"}),
})
def crl(request: Request, certificates: Certificates,
        issuer: Annotated[int | None, Query(ge=1, description="CA generation id")] = None) -> Response:
    """The CRL of the signing intermediate (or of generation `issuer`), signed by that CA.
    DER with `Accept: application/pkix-crl`, PEM otherwise."""
    revocation_list = certificates.crl(issuer)
    if PKIX_CRL in request.headers.get("accept", ""):
        return Response(revocation_list.public_bytes(Encoding.DER), media_type=PKIX_CRL)
    return Response(revocation_list.public_bytes(Encoding.PEM), media_type=PEM)
