"""Assemble the admin API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from meshca import __version__
from meshca.core.backoff import FailureBackoff
from meshca.service.admin_auth import AdminAuthenticator
from meshca.service.ports import AuditEntry
from meshca.transport.rest import dependencies, problems
from meshca.transport.rest.dependencies import AdminServices
from meshca.transport.rest.guards import RequestLimits, SecurityHeaders
from meshca.transport.rest.routes import (
    audit,
    authz,
    bundle,
    ca,
    certificates,
    federation,
    health,
    identities,
    tokens,
)
from meshca.transport.rest.security import ROUTE_ROLES, RoleMiddleware
from meshca.transport.rest.ui import routes as console

_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "a meshca admin token (`mca_…`), or a Kubernetes service-account token "
                              "whose account has a role (`--admin-service-account`)"},
    "mutualTLS": {"type": "mutualTLS",
                  "description": "no Authorization header, and a client certificate whose SPIFFE ID "
                                 "has a role (`--admin-spiffe-id`), on record and not revoked"},
}


class _AdminApi(FastAPI):
    """FastAPI, plus what its generator cannot see in the OpenAPI document: the problem-details
    schemas, and who may call what (enforced by RoleMiddleware, outside any route)."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            document = super().openapi()
            problems.add_problem_schemas(document)
            _add_access(document, self.routes)
            self.openapi_schema = document
        return self.openapi_schema


def _add_access(document: dict[str, Any], routes: list[Any]) -> None:
    """Security requirements, 401 and 403 for every operation that ROUTE_ROLES protects."""
    document.setdefault("components", {})["securitySchemes"] = dict(_SECURITY_SCHEMES)
    for route in routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        for method in sorted(route.methods or ()):
            operation = document["paths"].get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            if "requestBody" in operation:
                _add_responses(operation, problems.problem_responses(413))
            if (method, route.path) not in ROUTE_ROLES:  # refused to everyone
                _add_responses(operation, problems.problem_responses(403))
                continue
            role = ROUTE_ROLES[(method, route.path)]
            if role is None:  # public
                continue
            operation["security"] = [{name: []} for name in _SECURITY_SCHEMES]
            operation["description"] = (operation.get("description", "") +
                                        f"\n\nNeeds the `{role.label}` role or a higher one.").lstrip()
            _add_responses(operation, problems.problem_responses(401, 403, 429))


def _add_responses(operation: dict[str, Any], responses: dict[int | str, dict[str, Any]]) -> None:
    merged = {**operation["responses"], **{str(status): r for status, r in responses.items()}}
    operation["responses"] = dict(sorted(merged.items()))


@dataclass(frozen=True, slots=True)
class AdminLimits:
    max_request_bytes: int = 1024 * 1024
    max_header_bytes: int = 64 * 1024
    auth_failures: int = 10  # failed authentications per source before it must wait
    auth_backoff_seconds: float = 30.0


class AdminAsgi:
    """The ASGI app uvicorn serves: the guards every answer passes through, around the API.
    `api` is the FastAPI app itself (routes, OpenAPI document)."""

    def __init__(self, api: FastAPI, limits: AdminLimits) -> None:
        self.api = api
        self._app = SecurityHeaders(RequestLimits(api, limits.max_request_bytes,
                                                  limits.max_header_bytes))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)


def create_app(services: AdminServices, authenticator: AdminAuthenticator,
               limits: AdminLimits | None = None,
               refused: Callable[[AuditEntry], None] | None = None) -> AdminAsgi:
    """`refused` receives each refused request's audit entry (default: written at once)."""
    limits = limits or AdminLimits()
    app = _AdminApi(
        title="meshca admin API",
        version=__version__,
        description="Operate meshca: CA generations, issued certificates, revocation, "
                    "blocked identities, authorization policies, audit. Errors are RFC 9457 "
                    "problem details.",
        redoc_url=None,
        docs_url=None,  # ours: vendored Swagger UI, no CDN, no inline script (ui/routes.py)
        swagger_ui_oauth2_redirect_url=None,  # no OAuth2 here; one route fewer to guard
        # No redirect to a slash-less path: it would be built from the Host header, as http://.
        redirect_slashes=False,
    )
    dependencies.install(app, services)
    for router in (health.router, bundle.router, ca.router, certificates.router,
                   identities.router, audit.router, tokens.router, authz.router, federation.router,
                   console.router, console.api):
        # Added flat, so every route is a plain APIRoute the role middleware can match.
        app.router.routes.extend(router.routes)
    problems.install(app)
    app.add_middleware(RoleMiddleware, authenticator=authenticator,
                       refused=refused or (lambda entry: services.audit.append(entry)),
                       clock=services.clock,
                       backoff=FailureBackoff(limits.auth_failures, limits.auth_backoff_seconds))
    return AdminAsgi(app, limits)
