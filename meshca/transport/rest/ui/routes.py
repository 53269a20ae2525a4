"""Console pages, their static assets, the two reads only the console needs, and /docs."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from meshca.core.certificates import format_serial
from meshca.service.admin_auth import Principal
from meshca.service.admin_ports import IssuanceCounters
from meshca.transport.rest.dependencies import Certificates
from meshca.transport.rest.problems import problem_responses
from meshca.transport.rest.ui.pages import PAGES, docs_page, render

HTML = "text/html; charset=utf-8"
# Served by name only: a path parameter can never reach another file.
STATIC = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "docs.js": "text/javascript; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}

router = APIRouter(include_in_schema=False)


def _page(name: str) -> Any:
    def page() -> Response:
        return Response(render(name), media_type=HTML)
    page.__name__ = f"ui_{name}"
    return page


for _path, _name, _ in PAGES:
    router.add_api_route(f"/ui/{_path}", _page(_name), methods=["GET"])


@cache
def _asset(name: str) -> bytes:
    return (resources.files(__package__) / "static" / name).read_bytes()


@router.get("/ui/static/{name}")
def static(name: str) -> Response:
    if name not in STATIC:
        raise HTTPException(404, f"no console asset named {name[:64]!r}")
    return Response(_asset(name), media_type=STATIC[name],
                    headers={"cache-control": "no-cache"})


@router.get("/docs")
def docs() -> Response:
    """Swagger UI from vendored assets: works offline, and its Authorize box sends the token."""
    return Response(docs_page(), media_type=HTML)


api = APIRouter(tags=["console"])


@api.get("/ui/api/whoami")
def whoami(request: Request) -> dict[str, str]:
    """Who the credentials are and their role: the console shows only what the role may do."""
    principal = request.scope.get("state", {}).get("principal")
    assert isinstance(principal, Principal)  # RoleMiddleware put it there
    return {"actor": principal.actor, "role": principal.role.label}


@api.get("/ui/api/issuance")
def issuance(request: Request) -> dict[str, Any]:
    """This process's issuance totals (every worker summed), for the console's live chart."""
    counters: IssuanceCounters | None = getattr(request.app.state, "issuance", None)
    if counters is None:
        return {"available": False, "received": 0, "issued": 0, "failures": {}, "refusals": {}}
    counts = counters.read()
    return {"available": True, "received": counts.received, "issued": counts.issued,
            "failures": counts.failures, "refusals": counts.refusals}


@api.get("/ui/api/crl", responses=problem_responses(404, 422, meanings={
    404: "no intermediate CA generation has this id"}))
def crl_entries(certificates: Certificates,
                issuer: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None) -> dict[str, Any]:
    """The signing intermediate's CRL (or generation `issuer`'s), decoded for reading."""
    revocations = certificates.crl(issuer)
    entries = []
    for entry in revocations:
        reason = None
        for extension in entry.extensions:
            reason = getattr(extension.value, "reason", None)
        entries.append({"serial": format_serial(entry.serial_number),
                        "revoked_at": entry.revocation_date_utc.isoformat(),
                        "reason": reason.value if reason is not None else None})
    return {"issuer": revocations.issuer.rfc4514_string(),
            "this_update": revocations.last_update_utc.isoformat(),
            "next_update": revocations.next_update_utc.isoformat()
            if revocations.next_update_utc else None,
            "entries": entries}
