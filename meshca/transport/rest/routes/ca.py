"""CA generations: their state, and an operator's prepare / activate / taint."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from meshca.core.rotation import Kind
from meshca.transport.rest.dependencies import Actor, Ca
from meshca.transport.rest.models import CaActivateIn, CaChangeOut, CaKindIn, CaOut, TaintIn
from meshca.transport.rest.problems import problem_responses

router = APIRouter(tags=["ca"])
_CHANGE = problem_responses(400, 409, 422, 503, meanings={
    400: "the body is not JSON",
    409: "not possible in the CA's current state (the detail says why), or the CA is plugged in",
    503: "another replica holds the rotation lease for longer than the request may wait"})
GenerationPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="as listed by GET /v1/ca")]


@router.get("/v1/ca", response_model=CaOut)
def ca_status(ca: Ca) -> CaOut:
    """Every root and intermediate generation, oldest first; how (and whether) meshca rotates."""
    return CaOut.model_validate(ca.status(), from_attributes=True)


@router.post("/v1/ca:prepare", response_model=CaChangeOut, status_code=201,
             responses=_CHANGE)
def prepare(ca: Ca, actor: Actor, body: CaKindIn) -> CaChangeOut:
    """Prepare a new root (published in the bundle at once) or intermediate (under the active
    root) now, ahead of schedule. It signs only once activated. One generation of a kind waits
    prepared at a time: 409 while one does (activate it, or taint it to withdraw it)."""
    return CaChangeOut.model_validate(ca.prepare(Kind(body.kind), actor), from_attributes=True)


@router.post("/v1/ca:activate", response_model=CaChangeOut, responses=_CHANGE)
def activate(ca: Ca, actor: Actor, body: CaActivateIn) -> CaChangeOut:
    """Activate the oldest usable prepared generation of `kind` now; the active one retires."""
    change = ca.activate(Kind(body.kind), actor, waive_lead=body.waive_publish_lead)
    return CaChangeOut.model_validate(change, from_attributes=True)


@router.post("/v1/ca/generations/{generation_id}:taint", response_model=CaChangeOut,
             responses=problem_responses(400, 404, 409, 422, 503, meanings={
                 400: "the body is not JSON",
                 404: "no CA generation has this id",
                 409: "the generation is already tainted, or the CA is plugged in",
                 503: "another replica holds the rotation lease for longer than the request may "
                      "wait"}))
def taint(ca: Ca, actor: Actor, generation_id: GenerationPath,
          body: TaintIn | None = None) -> CaChangeOut:
    """Mark a key compromised: a tainted root leaves the bundle, nothing signs under the key
    again, a replacement is rotated in at once, and every certificate under the key must renew
    (renewal with such a certificate is refused; the workload re-authenticates with its token)."""
    change = ca.taint(generation_id, body.reason if body else "", actor)
    return CaChangeOut.model_validate(change, from_attributes=True)
