"""The audit log: every admin mutation and every refused authentication."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from meshca.service.admin_ports import AuditFilter
from meshca.transport.rest.dependencies import Audit
from meshca.transport.rest.models import NO_NUL, AuditEntryOut, AuditPage
from meshca.transport.rest.problems import BadRequest, problem_responses

router = APIRouter(tags=["audit"])
_CURSOR = re.compile(r"[0-9]{1,18}")  # an entry id; 18 digits stay inside a 64-bit column


def _contains(field: str) -> Any:
    return Query(max_length=512, pattern=NO_NUL, description=f"text the entry's {field} contains")


@router.get("/v1/audit", response_model=AuditPage,
            responses=problem_responses(400, 422, meanings={400: "`cursor` is not one this API returned"}))
def audit(trail: Audit, cursor: Annotated[str | None, Query(max_length=32)] = None,
          limit: Annotated[int, Query(ge=1, le=1000)] = 100,
          order: Annotated[Literal["oldest", "newest"], Query(
              description="newest: the latest entries first")] = "oldest",
          actor: Annotated[str | None, _contains("actor")] = None,
          action: Annotated[str | None, _contains("action")] = None,
          target: Annotated[str | None, _contains("target")] = None) -> AuditPage:
    """Oldest first (or newest first); append-only, so a cursor never skips or repeats an
    entry. `actor`, `action` and `target` keep the entries whose field contains the text."""
    after = 0
    if cursor is not None:
        if not _CURSOR.fullmatch(cursor):  # not str.isdigit: int() refuses '²', a digit to it
            raise BadRequest("cursor is not one this API returned")
        after = int(cursor)
    where = AuditFilter(actor or None, action or None, target or None)
    page = trail.search(where, after if cursor is not None else None, order == "newest", limit)
    return AuditPage(
        items=[AuditEntryOut(id=r.id, at=r.entry.at, actor=r.entry.actor, action=r.entry.action,
                             target=r.entry.target, outcome=r.entry.outcome, detail=r.entry.detail)
               for r in page.items],
        next_cursor=str(page.next_after) if page.next_after is not None else None,
    )
