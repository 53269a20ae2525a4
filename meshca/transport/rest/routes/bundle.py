"""The trust bundle (public): PEM or SPIFFE JWK Set, by Accept header."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from meshca.transport.rest.dependencies import Bundle
from meshca.transport.rest.models import SpiffeBundleOut
from meshca.transport.rest.problems import problem, problem_responses

router = APIRouter(tags=["trust bundle"])
PEM = "application/x-pem-file"

_CONTENT: dict[int | str, dict[str, Any]] = {
    # `model` documents the JSON form; the PEM form is a concatenation of certificates.
    200: {"model": SpiffeBundleOut, "content": {PEM: {"schema": {"type": "string"}}},
          "description": "the bundle"},
    **problem_responses(503, meanings={503: "the CA is not loaded yet"}),
}


@router.get("/v1/bundle", response_class=Response, responses=_CONTENT)
def bundle(request: Request, trust: Bundle) -> Response:
    """Every root peers must trust. `Accept: application/x-pem-file` for PEM (roots only);
    JSON (the SPIFFE bundle format: `x509-svid` roots and `jwt-svid` keys with their `kid`,
    `spiffe_sequence` and `spiffe_refresh_hint`) otherwise."""
    current = trust.current()
    if current is None:
        return problem(503, "the CA is not loaded yet", request)
    if PEM in request.headers.get("accept", ""):
        return Response(current.pem, media_type=PEM)
    return JSONResponse(trust.document())
