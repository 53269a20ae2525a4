"""TokenAdmin over fakes: create (shown once), revoke, the bootstrap token."""

from __future__ import annotations

import pytest

from meshca.core.roles import Role
from meshca.errors import Conflict, NotFound
from meshca.service.admin.tokens import BOOTSTRAP_NAME, TokenAdmin, new_admin_token
from meshca.service.admin_auth import ADMIN_TOKEN_PREFIX
from tests.fakes.admin_tokens import FakeAdminTokens
from tests.unit.admin_fixtures import FixedClock
from tests.unit.pki import NOW


def test_new_tokens_are_prefixed_and_distinct() -> None:
    a, b = new_admin_token(), new_admin_token()
    assert a.startswith(ADMIN_TOKEN_PREFIX) and a != b and len(a) > 40


def test_create_returns_a_token_that_authenticates_with_its_role() -> None:
    store = FakeAdminTokens()
    tokens = TokenAdmin(store, FixedClock())
    token = tokens.create("ci", Role.OPERATOR, "token:root")
    assert store.role_for(token) == ("ci", Role.OPERATOR)
    [record] = tokens.all()
    assert (record.name, record.created_by, record.created_at) == ("ci", "token:root", NOW)
    [entry] = store.audit.entries
    assert (entry.action, entry.target, entry.detail) == ("admin-token.create", "ci", "operator")


def test_a_taken_name_conflicts_without_an_audit_entry() -> None:
    store = FakeAdminTokens()
    tokens = TokenAdmin(store, FixedClock())
    tokens.create("ci", Role.VIEWER, "token:root")
    with pytest.raises(Conflict):
        tokens.create("ci", Role.ADMIN, "token:root")
    assert len(store.audit.entries) == 1


def test_revoke_refuses_the_last_admin_and_unknown_names() -> None:
    store = FakeAdminTokens()
    tokens = TokenAdmin(store, FixedClock())
    first = tokens.create("a", Role.ADMIN, "meshca")
    with pytest.raises(Conflict, match="last live admin token"):
        tokens.revoke("a", "token:a")
    with pytest.raises(NotFound):
        tokens.revoke("nobody", "token:a")
    tokens.create("b", Role.ADMIN, "token:a")
    tokens.revoke("a", "token:b")
    assert store.role_for(first) is None
    assert [e.action for e in store.audit.entries][-1] == "admin-token.revoke"


def test_bootstrap_creates_one_admin_token_only_when_none_is_live() -> None:
    store = FakeAdminTokens()
    tokens = TokenAdmin(store, FixedClock(), new_token=lambda: "mca_fixed")
    assert tokens.bootstrap() == "mca_fixed"
    assert store.role_for("mca_fixed") == (BOOTSTRAP_NAME, Role.ADMIN)
    assert store.audit.entries[0].actor == "meshca"
    assert tokens.bootstrap() is None


def test_bootstrap_after_its_name_was_used_takes_a_dated_name() -> None:
    store = FakeAdminTokens()
    tokens = TokenAdmin(store, FixedClock())
    tokens.create(BOOTSTRAP_NAME, Role.VIEWER, "meshca")
    assert tokens.bootstrap() is not None
    assert [t.name for t in tokens.all()] == [BOOTSTRAP_NAME, f"{BOOTSTRAP_NAME}-20260301120000"]
