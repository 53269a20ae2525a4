"""The audit log: every admin mutation and every refused authentication."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from meshca.infra.db.audit import list_audit
from meshca.transport.rest.context import Context
from meshca.transport.rest.models import AuditEntryOut, AuditPage
from meshca.transport.rest.problems import BadRequest

router = APIRouter(tags=["audit"])


@router.get("/v1/audit", response_model=AuditPage)
def audit(context: Context, cursor: Annotated[str | None, Query(max_length=32)] = None,
          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> AuditPage:
    """Oldest first; append-only, so a cursor never skips or repeats an entry."""
    after = 0
    if cursor is not None:
        if not cursor.isdigit():
            raise BadRequest("cursor is not one this API returned")
        after = int(cursor)
    rows = list_audit(context.engine, after_id=after, limit=limit + 1)
    page, more = rows[:limit], len(rows) > limit
    return AuditPage(
        items=[AuditEntryOut(id=r.id, at=r.entry.at, actor=r.entry.actor, action=r.entry.action,
                             target=r.entry.target, outcome=r.entry.outcome, detail=r.entry.detail)
               for r in page],
        next_cursor=str(page[-1].id) if more else None,
    )
