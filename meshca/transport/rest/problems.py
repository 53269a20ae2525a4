"""RFC 9457 problem details for every error the admin API returns."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from meshca.core.remote_signing import SignerUnavailable
from meshca.errors import (
    AuthenticationError,
    ConfigurationError,
    Conflict,
    InternalError,
    InvalidRequest,
    MeshcaError,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unavailable,
)

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"
_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 406: "Not Acceptable", 409: "Conflict",
           413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
           429: "Too Many Requests",
           431: "Request Header Fields Too Large",
           500: "Internal Server Error", 503: "Service Unavailable"}


_SCHEMAS = "#/components/schemas/"
_MEANINGS = {
    400: "the request cannot be used as sent (a malformed body, or a value this API did not issue)",
    401: "no credentials, or ones meshca does not accept",
    403: "the caller is known but its role does not allow this operation",
    404: "no such resource",
    409: "the resource is not in a state that allows this",
    413: "the request body is larger than --max-request-bytes",
    415: "the body's Content-Type is not one this operation reads",
    429: "too many failed authentications from this address; wait for Retry-After",
    422: "a parameter or the body does not match this operation's schema",
    503: "meshca cannot answer this yet",
}


class Problem(BaseModel):
    """RFC 9457 problem details: the body of every error the admin API answers."""

    type: str = Field(description="`about:blank`: the status code says what kind of problem this is")
    title: str = Field(description="the reason phrase of `status`")
    status: int = Field(ge=400, le=599, description="the HTTP status code of the response")
    detail: str = Field(description="what went wrong, for a human")
    instance: str = Field(description="the path of the request")


class InvalidParam(BaseModel):
    field: str = Field(description="where: `body.name`, `query.limit`, `path.serial`, ...")
    message: str


class ValidationProblem(Problem):
    """A 422: which parameters or body fields do not match the schema, and why."""

    errors: list[InvalidParam]


def problem_responses(*statuses: int, meanings: Mapping[int, str] | None = None,
                      ) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for a route decorator: these statuses answer problem details.

    `meanings` replaces the generic description of a status for this operation."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        model = ValidationProblem if status == 422 else Problem
        response: dict[str, Any] = {
            "description": (meanings or {}).get(status, _MEANINGS[status]),
            "content": {PROBLEM_JSON: {"schema": {"$ref": _SCHEMAS + model.__name__}}},
        }
        if status == 401:
            response["headers"] = {"WWW-Authenticate": {
                "description": "the scheme to authenticate with: `Bearer`", "required": True,
                "schema": {"type": "string"}}}
        responses[status] = response
    return responses


def add_problem_schemas(openapi: dict[str, Any]) -> None:
    """Put the schemas `problem_responses` refers to into an OpenAPI document."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for model in (Problem, ValidationProblem):
        schema = model.model_json_schema(ref_template=_SCHEMAS + "{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema


class BadRequest(InvalidRequest):
    """A request the caller can fix that validation models cannot express (e.g. a bad cursor):
    answered 400, where other invalid requests are 422."""


def problem(status: int, detail: str, request: Request | None = None,
            headers: Mapping[str, str] | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": _TITLES.get(status, "Error"),
                            "status": status, "detail": _clip(detail, _MAX_DETAIL)}
    if request is not None:
        body["instance"] = _clip(request.url.path)
    body.update(extra)
    errors = body.get("errors")
    if isinstance(errors, list):
        # A body with a million bad fields gets a short answer naming the first few; the
        # input itself is never echoed.
        body["errors"] = [{k: _clip(str(v)) for k, v in e.items()} if isinstance(e, dict) else e
                          for e in errors[:MAX_REPORTED_ERRORS]]
        if len(errors) > MAX_REPORTED_ERRORS:
            body["detail"] = (_clip(detail, _MAX_DETAIL - 40) +
                              f" (and {len(errors) - MAX_REPORTED_ERRORS} more)")
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON,
                        headers=dict(headers) if headers else None)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path. Starlette's own 405 names only the methods
    of the first route whose path matches (e.g. GET, not also POST, for /v1/admin-tokens)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


MAX_REPORTED_ERRORS = 20
_MAX_TEXT = 200
_MAX_DETAIL = 2000


def _clip(text: str, limit: int = _MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field_path(e.get("loc", ())), "message": str(e.get("msg", ""))}
                  for e in exc.errors()]
        names = ", ".join(e["field"] for e in errors[:MAX_REPORTED_ERRORS]) or "request"
        return problem(422, f"invalid value for {names}", request, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return problem(exc.status_code, str(exc.detail), request, headers=headers or None)

    @app.exception_handler(MeshcaError)
    async def meshca_error(request: Request, exc: MeshcaError) -> JSONResponse:
        return error_problem(exc, request)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error_problem(exc, request)


# The admin API's one table from meshca's errors (meshca/errors.py) to HTTP statuses, by the
# nearest class in the error's MRO. An error it does not name is a 500, logged once here.
HTTP_STATUS_FOR: dict[type[Exception], int] = {
    AuthenticationError: 401,
    PermissionDenied: 403,
    BadRequest: 400,
    InvalidRequest: 422,
    NotFound: 404,
    Conflict: 409,
    RateLimited: 429,
    Unavailable: 503,
    ConfigurationError: 503,
    InternalError: 500,
}


def http_status_for(exc: Exception) -> int:
    for kind in type(exc).__mro__:
        if kind in HTTP_STATUS_FOR:
            return HTTP_STATUS_FOR[kind]
    return 500


def error_problem(exc: Exception, request: Request) -> JSONResponse:
    status = http_status_for(exc)
    if status == 500:
        log.error("admin API request failed inside meshca", exc_info=exc)
        return problem(500, "internal error; see the meshca log", request)
    headers: dict[str, str] = {}
    detail = str(exc)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    elif status == 404:
        detail = f"{exc} was not found"
    elif status == 429 and isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    elif status == 503:
        headers["Retry-After"] = "5"
        if isinstance(exc, SignerUnavailable):
            detail = f"the key service (Vault) is unavailable: {exc}"
    return problem(status, detail, request, headers=headers or None)
