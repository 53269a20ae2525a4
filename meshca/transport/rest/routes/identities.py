"""Blocking identities: a blocked SPIFFE ID gets PERMISSION_DENIED from CreateCertificate."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from meshca.core.spiffe import SpiffeId
from meshca.transport.rest.dependencies import Actor, Identities
from meshca.transport.rest.models import BlockedOut, BlockIn, StatusOut
from meshca.transport.rest.problems import BadRequest, problem_responses

router = APIRouter(tags=["identities"])
# The SPIFFE ID grammar but for two rules a pattern cannot say simply, which answer 400: no
# '.' or '..' path segment, at most 255 bytes of trust domain.
SpiffeIdPath = Annotated[str, Path(
    description="the SPIFFE ID, URL-encoded (%3A, %2F)", max_length=2048,
    pattern=r"^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)*$",
    openapi_examples={"workload": {"value": "spiffe://cluster.local/ns/payments/sa/api"}})]
_NOT_A_SPIFFE_ID = {400: "not a SPIFFE ID ('.' or '..' segment, trust domain over 255 bytes)"}


def _spiffe_id(value: str) -> str:
    try:
        return str(SpiffeId.parse(value))
    except ValueError as exc:
        raise BadRequest(f"not a SPIFFE ID: {exc}") from None


@router.get("/v1/identities:blocked", response_model=list[BlockedOut])
def blocked(identities: Identities) -> Any:
    """Every blocked identity."""
    return [BlockedOut.model_validate(r, from_attributes=True) for r in identities.blocked()]


@router.post("/v1/identities/{spiffe_id:path}:block", response_model=StatusOut,
             responses=problem_responses(400, 409, 422, meanings={
                 400: _NOT_A_SPIFFE_ID[400] + ", or a body that is not JSON",
                 409: "the identity is already blocked"}))
def block(identities: Identities, actor: Actor, spiffe_id: SpiffeIdPath,
          body: BlockIn | None = None) -> StatusOut:
    """Refuse new certificates for this identity until it is unblocked."""
    identities.block(_spiffe_id(spiffe_id), body.reason if body else "", actor)
    return StatusOut(status="blocked")


@router.post("/v1/identities/{spiffe_id:path}:unblock", response_model=StatusOut,
             responses=problem_responses(400, 404, 422, meanings={
                 **_NOT_A_SPIFFE_ID, 404: "the identity is not blocked"}))
def unblock(identities: Identities, actor: Actor, spiffe_id: SpiffeIdPath) -> StatusOut:
    """Let this identity get certificates again."""
    identities.unblock(_spiffe_id(spiffe_id), actor)
    return StatusOut(status="unblocked")
