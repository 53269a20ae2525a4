"""What the admin routes need, one dependency per resource: the use cases of service/admin/,
built by the composition root (wiring/admin.py) and handed to `create_app` as AdminServices."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

from meshca.core.clock import Clock
from meshca.service.admin.audit import AuditTrail
from meshca.service.admin.ca import CaAdmin, TrustBundleView
from meshca.service.admin.certificates import CertificateAdmin
from meshca.service.admin.federation import FederationAdmin
from meshca.service.admin.health import Readiness
from meshca.service.admin.identities import IdentityAdmin
from meshca.service.admin.policies import PolicyAdmin
from meshca.service.admin.tokens import TokenAdmin
from meshca.service.admin_auth import Principal
from meshca.service.admin_ports import IssuanceCounters


@dataclass(frozen=True, slots=True)
class AdminServices:
    certificates: CertificateAdmin
    identities: IdentityAdmin
    tokens: TokenAdmin
    ca: CaAdmin
    bundle: TrustBundleView
    audit: AuditTrail
    health: Readiness
    authz: PolicyAdmin | None
    clock: Clock  # stamps the audit entries of refused requests
    federation: FederationAdmin | None = None
    issuance: IssuanceCounters | None = None  # the console's live chart; None: not counted here


def install(app: FastAPI, services: AdminServices) -> None:
    """Each service in its own slot of `app.state`, where its dependency finds it."""
    for slot in fields(AdminServices):
        if slot.name != "clock":
            setattr(app.state, slot.name, getattr(services, slot.name))


def _slot(name: str, kind: type[Any]) -> Any:
    def service(request: Request) -> Any:
        found = getattr(request.app.state, name)
        assert isinstance(found, kind), f"app.state.{name} is not a {kind.__name__}"
        return found
    return Depends(service)


def _actor(request: Request) -> str:
    """Who is asking, for the audit log: the principal RoleMiddleware authenticated."""
    principal = request.scope.get("state", {}).get("principal")
    return principal.actor if isinstance(principal, Principal) else "anonymous"


Certificates = Annotated[CertificateAdmin, _slot("certificates", CertificateAdmin)]
Identities = Annotated[IdentityAdmin, _slot("identities", IdentityAdmin)]
Tokens = Annotated[TokenAdmin, _slot("tokens", TokenAdmin)]
Ca = Annotated[CaAdmin, _slot("ca", CaAdmin)]
Bundle = Annotated[TrustBundleView, _slot("bundle", TrustBundleView)]
Audit = Annotated[AuditTrail, _slot("audit", AuditTrail)]
Health = Annotated[Readiness, _slot("health", Readiness)]
Authz = Annotated[PolicyAdmin, _slot("authz", PolicyAdmin)]
Federation = Annotated[FederationAdmin, _slot("federation", FederationAdmin)]
Actor = Annotated[str, Depends(_actor)]
