"""Admin bearer tokens (admin role)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from meshca.core.roles import Role
from meshca.transport.rest.dependencies import Actor, Tokens
from meshca.transport.rest.models import StatusOut, TokenCreatedOut, TokenCreateIn, TokenOut
from meshca.transport.rest.problems import problem_responses

router = APIRouter(tags=["admin tokens"])
TokenName = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                                openapi_examples={"name": {"value": "ci-deploy"}})]


@router.get("/v1/admin-tokens", response_model=list[TokenOut])
def list_tokens(tokens: Tokens) -> Any:
    """Every token, live or revoked (never the token itself)."""
    return [TokenOut(name=t.name, role=t.role.label, created_by=t.created_by,
                     created_at=t.created_at, revoked_at=t.revoked_at) for t in tokens.all()]


@router.post("/v1/admin-tokens", response_model=TokenCreatedOut, status_code=201,
             responses=problem_responses(400, 409, 422, meanings={409: "a token has this name"}))
def create_token(tokens: Tokens, actor: Actor, body: TokenCreateIn) -> TokenCreatedOut:
    """Create a token; the response is the only time it is shown."""
    token = tokens.create(body.name, Role.parse(body.role), actor)
    return TokenCreatedOut(name=body.name, role=body.role, token=token)


@router.post("/v1/admin-tokens/{name}:revoke", response_model=StatusOut,
             responses=problem_responses(404, 422, meanings={404: "no live token has this name"}))
def revoke_token(tokens: Tokens, actor: Actor, name: TokenName) -> StatusOut:
    """Revoke a token at once, on every replica."""
    tokens.revoke(name, actor)
    return StatusOut(status="revoked")
