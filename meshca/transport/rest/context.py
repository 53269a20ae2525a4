"""What the admin routes need, built by the composition root and handed to `create_app`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine

from meshca.core.authority import SigningAuthority
from meshca.core.clock import Clock
from meshca.core.rotation import RotationPolicy
from meshca.infra.db.admin_tokens import SqlAdminTokens
from meshca.infra.db.ca_repository import SqlCaRepository
from meshca.infra.db.inventory import SqlInventory
from meshca.service.admin_auth import Principal
from meshca.service.ca_ports import KeyBackend
from meshca.service.ca_rotator import CaRotator
from meshca.service.ca_source import PluggedCaSource
from meshca.service.ports import AuditEntry


@dataclass(frozen=True, slots=True)
class AdminContext:
    engine: Engine
    inventory: SqlInventory
    tokens: SqlAdminTokens
    ca: SqlCaRepository
    authority: Callable[[], SigningAuthority | None]
    clock: Clock
    keys: KeyBackend
    bundle_refresh_hint_seconds: int = 300
    rotator: CaRotator | None = None  # None: a plugged-in CA, which meshca does not rotate
    rotation_policy: RotationPolicy | None = None
    plugged: PluggedCaSource | None = None
    bundle_sequence: Callable[[], int] | None = None  # of the bundle `authority` serves
    ca_changed: Callable[[], None] = lambda: None  # reload this process now

    def audit(self, request: Request, action: str, target: str, detail: str | None = None,
              outcome: str = "ok") -> AuditEntry:
        principal = request.scope.get("state", {}).get("principal")
        actor = principal.actor if isinstance(principal, Principal) else "anonymous"
        return AuditEntry(at=self.clock.now(), actor=actor, action=action, target=target,
                          outcome=outcome, detail=detail)


def _context(request: Request) -> AdminContext:
    context = request.app.state.admin
    assert isinstance(context, AdminContext)
    return context


Context = Annotated[AdminContext, Depends(_context)]
