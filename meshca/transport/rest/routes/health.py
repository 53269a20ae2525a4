"""Liveness and readiness (public)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from meshca.transport.rest.context import Context
from meshca.transport.rest.models import StatusOut
from meshca.transport.rest.problems import problem

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=StatusOut)
def healthz() -> StatusOut:
    """The process is alive."""
    return StatusOut(status="ok")


@router.get("/readyz", response_model=StatusOut,
            responses={503: {"description": "not ready", "content": {"application/problem+json": {}}}})
def readyz(context: Context) -> StatusOut | JSONResponse:
    """The signing key is loaded and the database answers."""
    if context.authority() is None:
        return problem(503, "signing key is not loaded")
    try:
        with context.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return problem(503, "database is not reachable")
    return StatusOut(status="ready")
