"""Deny by default: every route has a minimum role in ONE table, enforced in middleware.

A route missing from the table answers 403 to everyone, and a test fails, so no route can be
added and forgotten. `None` marks the few public routes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from meshca.core.backoff import FailureBackoff
from meshca.core.clock import Clock
from meshca.core.roles import Role
from meshca.errors import AuthenticationError, PermissionDenied
from meshca.service.admin_auth import AdminAuthenticator, Principal
from meshca.service.ports import AuditEntry
from meshca.transport.http_server import client_certificate, trust_anchor
from meshca.transport.rest.problems import problem

log = logging.getLogger(__name__)

ROUTE_ROLES: dict[tuple[str, str], Role | None] = {
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("GET", "/v1/bundle"): None,
    # The API's description holds no secret, and a browser cannot send a bearer token when it
    # opens a page: the documentation and the console's pages are public shells with no data.
    # What they show comes from the routes below, called with the tab's token.
    ("GET", "/openapi.json"): None,
    ("GET", "/docs"): None,
    ("GET", "/ui/"): None,
    ("GET", "/ui/ca"): None,
    ("GET", "/ui/certificates"): None,
    ("GET", "/ui/identities"): None,
    ("GET", "/ui/policies"): None,
    ("GET", "/ui/audit"): None,
    ("GET", "/ui/issuance"): None,
    ("GET", "/ui/static/{name}"): None,
    ("GET", "/ui/api/whoami"): Role.VIEWER,
    ("GET", "/ui/api/issuance"): Role.VIEWER,
    ("GET", "/ui/api/crl"): Role.VIEWER,
    ("GET", "/v1/ca"): Role.VIEWER,
    ("POST", "/v1/ca:prepare"): Role.OPERATOR,
    ("POST", "/v1/ca:activate"): Role.OPERATOR,
    ("POST", "/v1/ca/generations/{generation_id}:taint"): Role.OPERATOR,
    ("GET", "/v1/certificates"): Role.VIEWER,
    ("GET", "/v1/certificates/{serial}"): Role.VIEWER,
    ("POST", "/v1/certificates/{serial}:revoke"): Role.OPERATOR,
    ("GET", "/v1/crl"): Role.VIEWER,
    ("GET", "/v1/identities:blocked"): Role.VIEWER,
    ("POST", "/v1/identities/{spiffe_id:path}:block"): Role.OPERATOR,
    ("POST", "/v1/identities/{spiffe_id:path}:unblock"): Role.OPERATOR,
    ("GET", "/v1/audit"): Role.VIEWER,
    ("POST", "/v1/authz:evaluate"): Role.VIEWER,
    ("POST", "/v1/authz:check"): Role.VIEWER,
    ("GET", "/v1/authz/policies"): Role.VIEWER,
    ("POST", "/v1/authz/policies"): Role.ADMIN,
    ("GET", "/v1/authz/policies/{namespace}/{name}"): Role.VIEWER,
    ("PUT", "/v1/authz/policies/{namespace}/{name}"): Role.ADMIN,
    ("DELETE", "/v1/authz/policies/{namespace}/{name}"): Role.ADMIN,
    ("GET", "/v1/federation"): Role.VIEWER,
    ("GET", "/v1/federation/{trust_domain}"): Role.VIEWER,
    ("POST", "/v1/federation"): Role.ADMIN,
    ("PUT", "/v1/federation/{trust_domain}"): Role.ADMIN,
    ("DELETE", "/v1/federation/{trust_domain}"): Role.ADMIN,
    ("GET", "/v1/admin-tokens"): Role.ADMIN,
    ("POST", "/v1/admin-tokens"): Role.ADMIN,
    ("POST", "/v1/admin-tokens/{name}:revoke"): Role.ADMIN,
}
_UNLISTED = object()


class RoleMiddleware:
    def __init__(self, app: ASGIApp, authenticator: AdminAuthenticator,
                 refused: Callable[[AuditEntry], None], clock: Clock,
                 backoff: FailureBackoff | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self._authenticator = authenticator
        self._refused = refused
        self._clock = clock
        self._backoff = backoff or FailureBackoff(10, 30.0)
        self._monotonic = monotonic

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int,
                      message: str, actor: str, template: str,
                      headers: dict[str, str] | None = None) -> None:
        """Answer 401/403/429 and put the refusal in the audit log."""
        request = Request(scope)
        entry = AuditEntry(at=self._clock.now(), actor=actor, action="admin.authenticate",
                           target=f"{scope['method']} {template}", outcome="refused",
                           detail=message)
        try:
            await run_in_threadpool(self._refused, entry)
        except Exception:  # the refusal stands even if it cannot be written down
            log.exception("could not write the audit entry of a refused admin request")
        if status == 401:
            headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
        await problem(status, message, request, headers=headers)(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        template = _route_template(scope)
        if template is None:  # no handler will run: FastAPI answers 404 or 405 itself
            await self.app(scope, receive, send)
            return
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        required = ROUTE_ROLES.get((method, template), _UNLISTED)
        if required is _UNLISTED:
            await problem(403, "this route has no entry in the role table", request)(
                scope, receive, send)
            return
        if required is None:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        source = str(client[0]) if client else "unknown"
        address = f"{client[0]}:{client[1]}" if client else "unknown"
        wait = self._backoff.wait(source, self._monotonic())
        if wait > 0:  # credentials are not even looked at while the source must wait
            await self._refuse(scope, receive, send, 429,
                               f"too many failed authentications from {source}; retry in "
                               f"{wait:.0f} s", f"https:{address}", template,
                               headers={"Retry-After": str(max(1, round(wait)))})
            return
        try:
            principal: Principal = await self._authenticator.authenticate(
                request.headers.get("authorization"), client_certificate(scope),
                trust_anchor(scope))
        except (AuthenticationError, PermissionDenied) as exc:
            self._backoff.failed(source, self._monotonic())
            status = 401 if isinstance(exc, AuthenticationError) else 403
            await self._refuse(scope, receive, send, status, str(exc), f"https:{address}", template)
            return
        self._backoff.succeeded(source)
        assert isinstance(required, Role)
        if principal.role < required:
            message = f"{principal.actor} has role {principal.role.label}; this needs {required.label}"
            await self._refuse(scope, receive, send, 403, message, principal.actor, template)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def _route_template(scope: Scope) -> str | None:
    app = scope.get("app")
    router = getattr(app, "router", None)
    if router is None:
        return None
    for route in router.routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(route.path)
    return None  # unknown path, or a known path with another method: 404 or 405
