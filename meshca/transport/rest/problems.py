"""RFC 9457 problem details for every error the admin API returns."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from meshca.errors import AuthenticationError, PermissionDenied
from meshca.infra.db.admin_tokens import TokenNameTaken, TokenNotFound
from meshca.infra.db.inventory import Conflict, NotFound

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"
_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 406: "Not Acceptable", 409: "Conflict",
           422: "Unprocessable Content", 500: "Internal Server Error", 503: "Service Unavailable"}


class BadRequest(Exception):
    """A request the caller can fix that validation models cannot express (e.g. a bad cursor)."""


def problem(status: int, detail: str, request: Request | None = None,
            headers: Mapping[str, str] | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": _TITLES.get(status, "Error"),
                            "status": status, "detail": detail}
    if request is not None:
        body["instance"] = request.url.path
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON,
                        headers=dict(headers) if headers else None)


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field_path(e.get("loc", ())), "message": str(e.get("msg", ""))}
                  for e in exc.errors()]
        names = ", ".join(e["field"] for e in errors) or "request"
        return problem(422, f"invalid value for {names}", request, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), request, headers=exc.headers)

    @app.exception_handler(AuthenticationError)
    async def unauthenticated(request: Request, exc: AuthenticationError) -> JSONResponse:
        return problem(401, str(exc), request, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(PermissionDenied)
    async def forbidden(request: Request, exc: PermissionDenied) -> JSONResponse:
        return problem(403, str(exc), request)

    @app.exception_handler(NotFound)
    @app.exception_handler(TokenNotFound)
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return problem(404, f"{exc} was not found", request)

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict) -> JSONResponse:
        return problem(409, str(exc), request)

    @app.exception_handler(TokenNameTaken)
    async def token_taken(request: Request, exc: TokenNameTaken) -> JSONResponse:
        return problem(409, f"a token named {exc} already exists", request)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return problem(400, str(exc), request)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("admin API request failed inside meshca")
        return problem(500, "internal error; see the meshca log", request)
