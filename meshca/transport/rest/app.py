"""Assemble the admin API."""

from __future__ import annotations

from fastapi import FastAPI

from meshca import __version__
from meshca.infra.db.audit import append_audit_alone
from meshca.service.admin_auth import AdminAuthenticator
from meshca.transport.rest import problems
from meshca.transport.rest.context import AdminContext
from meshca.transport.rest.routes import audit, bundle, ca, certificates, health, identities, tokens
from meshca.transport.rest.security import RoleMiddleware
from meshca.transport.tls_front import PeerCertificates


def create_app(context: AdminContext, authenticator: AdminAuthenticator,
               peers: PeerCertificates) -> FastAPI:
    app = FastAPI(
        title="meshca admin API",
        version=__version__,
        description="Operate meshca: CA generations, issued certificates, revocation, "
                    "blocked identities, audit. Errors are RFC 9457 problem details.",
        redoc_url=None,
    )
    app.state.admin = context
    for module in (health, bundle, ca, certificates, identities, audit, tokens):
        # Added flat, so every route is a plain APIRoute the role middleware can match.
        app.router.routes.extend(module.router.routes)
    problems.install(app)
    app.add_middleware(RoleMiddleware, authenticator=authenticator, peers=peers,
                       refused=lambda entry: append_audit_alone(context.engine, entry),
                       clock=context.clock)
    return app
