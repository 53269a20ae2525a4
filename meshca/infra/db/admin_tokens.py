"""Admin bearer tokens: only a SHA-256 of each is stored, never the token. Implements the
AdminTokenStore port (service/admin_ports.py)."""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from meshca.core.roles import Role
from meshca.infra.db.audit import append_audit
from meshca.infra.db.inventory import Conflict, NotFound
from meshca.infra.db.schema import admin_tokens
from meshca.infra.db.store_errors import store_call
from meshca.service.admin_ports import AdminToken
from meshca.service.ports import AuditEntry

__all__ = ["AdminToken", "LastAdminToken", "SqlAdminTokens", "TokenNameTaken", "TokenNotFound",
           "token_digest"]


class TokenNameTaken(Conflict):
    def __str__(self) -> str:
        return f"a token named {self.args[0]} already exists" if self.args else "name taken"


class TokenNotFound(NotFound):
    pass


class LastAdminToken(Conflict):
    """Revoking it would leave no live admin token, locking administrators out."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SqlAdminTokens:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @store_call
    def create(self, name: str, role: Role, token: str, audit: AuditEntry) -> None:
        try:
            with self._engine.begin() as connection:
                connection.execute(insert(admin_tokens).values(
                    name=name, role=role.label, token_sha256=token_digest(token),
                    created_by=audit.actor, created_at=audit.at, revoked_at=None,
                ))
                append_audit(connection, audit)
        except IntegrityError:
            raise TokenNameTaken(name) from None

    @store_call
    def revoke(self, name: str, audit: AuditEntry) -> None:
        t = admin_tokens.c
        with self._engine.begin() as connection:
            live_admins = set(connection.execute(
                select(t.name).where(t.role == Role.ADMIN.label, t.revoked_at.is_(None))
                .with_for_update()
            ).scalars())
            if live_admins == {name}:
                raise LastAdminToken(f"{name} is the last live admin token; create another "
                                     "admin token before revoking it")
            result = connection.execute(
                update(admin_tokens)
                .where(admin_tokens.c.name == name, admin_tokens.c.revoked_at.is_(None))
                .values(revoked_at=audit.at)
            )
            if result.rowcount != 1:
                raise TokenNotFound(name)
            append_audit(connection, audit)

    @store_call
    def role_for(self, token: str) -> tuple[str, Role] | None:
        """(name, role) of a live token, or None. The digest is compared in constant time."""
        digest = token_digest(token)
        query = select(admin_tokens).where(
            admin_tokens.c.token_sha256 == digest, admin_tokens.c.revoked_at.is_(None)
        )
        with self._engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        if row is None or not hmac.compare_digest(row["token_sha256"], digest):
            return None
        return str(row["name"]), Role.parse(row["role"])

    @store_call
    def all(self) -> list[AdminToken]:
        with self._engine.connect() as connection:
            rows = connection.execute(select(admin_tokens).order_by(admin_tokens.c.name)).mappings()
            return [AdminToken(r["name"], Role.parse(r["role"]), r["created_by"], r["created_at"],
                               r["revoked_at"]) for r in rows]

    @store_call
    def live_admin_exists(self) -> bool:
        t = admin_tokens.c
        query = select(t.name).where(t.role == Role.ADMIN.label, t.revoked_at.is_(None)).limit(1)
        with self._engine.connect() as connection:
            return connection.execute(query).first() is not None
