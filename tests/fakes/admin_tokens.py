"""In-memory AdminTokenStore (service/admin_ports.py): keeps a digest, never the token."""

from __future__ import annotations

import dataclasses
import hashlib

from meshca.core.roles import Role
from meshca.errors import Conflict, NotFound
from meshca.service.admin_ports import AdminToken
from meshca.service.ports import AuditEntry
from tests.fakes.audit import FakeAuditLog


class FakeAdminTokens:
    def __init__(self, audit: FakeAuditLog | None = None) -> None:
        self.audit = audit or FakeAuditLog()
        self.tokens: dict[str, AdminToken] = {}
        self.digests: dict[str, str] = {}  # digest: name

    def create(self, name: str, role: Role, token: str, audit: AuditEntry) -> None:
        self.audit.check()
        if name in self.tokens:
            raise Conflict(f"a token named {name} already exists")
        self.tokens[name] = AdminToken(name, role, audit.actor, audit.at, None)
        self.digests[hashlib.sha256(token.encode()).hexdigest()] = name
        self.audit.append(audit)

    def revoke(self, name: str, audit: AuditEntry) -> None:
        self.audit.check()
        live_admins = {t.name for t in self.tokens.values()
                       if t.role is Role.ADMIN and t.revoked_at is None}
        if live_admins == {name}:
            raise Conflict(f"{name} is the last live admin token; create another admin token "
                           "before revoking it")
        found = self.tokens.get(name)
        if found is None or found.revoked_at is not None:
            raise NotFound(name)
        self.tokens[name] = dataclasses.replace(found, revoked_at=audit.at)
        self.audit.append(audit)

    def role_for(self, token: str) -> tuple[str, Role] | None:
        name = self.digests.get(hashlib.sha256(token.encode()).hexdigest())
        found = self.tokens.get(name) if name else None
        if found is None or found.revoked_at is not None:
            return None
        return found.name, found.role

    def all(self) -> list[AdminToken]:
        return [self.tokens[k] for k in sorted(self.tokens)]

    def live_admin_exists(self) -> bool:
        return any(t.role is Role.ADMIN and t.revoked_at is None for t in self.tokens.values())
