"""PolicyAdmin over a fake store: a put or delete is audited, versioned and enforced at once."""

from __future__ import annotations

from typing import Any

import pytest

from meshca.authz import Invalid, MeshConfig
from meshca.errors import NotFound
from meshca.service.admin.policies import PolicyAdmin
from meshca.service.policy_store import PolicyStore
from tests.fakes.policies import FakeStoredPolicies
from tests.unit.admin_fixtures import FixedClock

POLICY: dict[str, Any] = {
    "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
    "metadata": {"name": "p", "namespace": "shop"}, "spec": {"action": "DENY", "rules": [{}]}}


def _admin() -> tuple[PolicyAdmin, FakeStoredPolicies]:
    stored = FakeStoredPolicies()
    return PolicyAdmin(PolicyStore(), stored, MeshConfig(), FixedClock()), stored


def test_put_is_enforced_here_at_once_and_audited() -> None:
    admin, stored = _admin()
    row, created = admin.put("shop", "p", POLICY, "token:a")
    assert created and row.version == 1
    assert [p.key for p in admin.store.current.policies] == ["shop/p"]
    assert admin.store.source_of("shop/p") == "api"
    _, created = admin.put("shop", "p", POLICY, "token:a")
    assert not created
    assert [(e.action, e.target) for e in stored.audit.entries] == [
        ("authz.policy.put", "shop/p")] * 2


def test_an_invalid_policy_is_refused_before_the_store() -> None:
    admin, stored = _admin()
    with pytest.raises(Invalid):
        admin.put("shop", "p", {**POLICY, "spec": {"action": "DENY"}}, "token:a")
    assert stored.all() == (0, []) and stored.audit.entries == []


def test_delete_removes_the_policy_and_unknown_ones_are_not_found() -> None:
    admin, stored = _admin()
    admin.put("shop", "p", POLICY, "token:a")
    assert admin.delete("shop", "p", "token:a") == 2
    assert len(admin.store.current) == 0
    with pytest.raises(NotFound):
        admin.delete("shop", "p", "token:a")
    assert [e.action for e in stored.audit.entries] == ["authz.policy.put", "authz.policy.delete"]
