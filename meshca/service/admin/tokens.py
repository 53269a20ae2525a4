"""Admin bearer tokens: listed, created (shown once), revoked; the first one at start-up."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from meshca.core.clock import Clock
from meshca.core.roles import Role
from meshca.errors import Conflict
from meshca.service.admin.audit import audit_entry
from meshca.service.admin_auth import ADMIN_TOKEN_PREFIX
from meshca.service.admin_ports import AdminToken, AdminTokenStore

BOOTSTRAP_NAME = "bootstrap-admin"


def new_admin_token() -> str:
    return ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)


class TokenAdmin:
    def __init__(self, store: AdminTokenStore, clock: Clock,
                 new_token: Callable[[], str] = new_admin_token) -> None:
        self._store = store
        self._clock = clock
        self._new_token = new_token

    def all(self) -> list[AdminToken]:
        """Live and revoked, by name (never the token itself)."""
        return self._store.all()

    def create(self, name: str, role: Role, actor: str) -> str:
        """The new token, which is never shown again; Conflict if the name is taken."""
        token = self._new_token()
        self._store.create(name, role, token, audit_entry(
            self._clock, actor, "admin-token.create", name, detail=role.label))
        return token

    def revoke(self, name: str, actor: str) -> None:
        """NotFound unless a live token has this name; Conflict for the last live admin token."""
        self._store.revoke(name, audit_entry(self._clock, actor, "admin-token.revoke", name))

    def bootstrap(self) -> str | None:
        """A first admin token when no live one exists (first start, or all revoked), created
        by "meshca"; None when there is one. A taken name (a revoked bootstrap token) gets the
        time appended."""
        if self._store.live_admin_exists():
            return None
        token = self._new_token()
        now = self._clock.now()
        for name in (BOOTSTRAP_NAME, f"{BOOTSTRAP_NAME}-{now:%Y%m%d%H%M%S}"):
            try:
                self._store.create(name, Role.ADMIN, token, audit_entry(
                    self._clock, "meshca", "admin-token.create", name, detail=Role.ADMIN.label))
                return token
            except Conflict:
                continue
        raise Conflict("no free name for a bootstrap admin token; revoke and retry")
