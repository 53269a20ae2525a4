"""Liveness and readiness (public)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from meshca.transport.rest.dependencies import Health
from meshca.transport.rest.models import ReadyOut, StatusOut
from meshca.transport.rest.problems import problem, problem_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=StatusOut)
def healthz() -> StatusOut:
    """The process is alive."""
    return StatusOut(status="ok")


@router.get("/readyz", response_model=ReadyOut,
            responses=problem_responses(503, meanings={503: "not ready"}))
def readyz(request: Request, health: Health) -> ReadyOut | JSONResponse:
    """The signing key is loaded and the database answers. `warnings` names what a ready
    server still reports, e.g. a federated trust domain whose bundle is missing or whose last
    fetch failed (its last good bundle is kept)."""
    reason = health.not_ready()
    if reason is not None:
        return problem(503, reason, request)
    return ReadyOut(status="ready", warnings=health.warnings())
