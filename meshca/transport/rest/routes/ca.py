"""CA generations."""

from __future__ import annotations

from fastapi import APIRouter

from meshca.transport.rest.context import Context
from meshca.transport.rest.models import CaGenerationOut, CaOut

router = APIRouter(tags=["ca"])


@router.get("/v1/ca", response_model=CaOut)
def list_generations(context: Context) -> CaOut:
    """Every root and intermediate generation meshca knows, oldest first."""
    authority = context.authority()
    signing = authority.generation_id if authority else None
    return CaOut(generations=[
        CaGenerationOut(id=g.id, kind=g.kind, parent_id=g.parent_id, subject=g.subject,
                        serial=g.serial, key_type=g.key_type, key_location=g.key_location,
                        not_before=g.not_before, not_after=g.not_after, state=g.state,
                        signing=g.id == signing)
        for g in context.ca.all()
    ])
