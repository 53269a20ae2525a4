"""Liveness and readiness (public)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from meshca.transport.rest.context import Context
from meshca.transport.rest.models import StatusOut
from meshca.transport.rest.problems import problem, problem_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=StatusOut)
def healthz() -> StatusOut:
    """The process is alive."""
    return StatusOut(status="ok")


@router.get("/readyz", response_model=StatusOut,
            responses=problem_responses(503, meanings={503: "not ready"}))
def readyz(request: Request, context: Context) -> StatusOut | JSONResponse:
    """The signing key is loaded and the database answers."""
    if context.authority() is None:
        return problem(503, "signing key is not loaded", request)
    # Vault matters for readiness only when signing needs it: with the intermediate's key in a
    # local sealed file, issuance goes on through a Vault outage (only rotation waits).
    health = context.keys.health
    authority = context.authority()
    if health is not None and not health.ready and authority is not None and authority.is_remote:
        return problem(503, "the signing key's service (Vault) is not reachable", request)
    try:
        with context.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return problem(503, "database is not reachable", request)
    return StatusOut(status="ready")
