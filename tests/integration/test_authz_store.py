"""Stored policies (SQLite and PostgreSQL): versioned, audited in the same transaction; the
policy dir loader; the store's atomic swap."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from meshca.authz import Invalid
from meshca.infra.db.audit import list_audit
from meshca.infra.db.engine import migrate, open_engine
from meshca.infra.db.inventory import NotFound
from meshca.infra.db.policies import SqlPolicies
from meshca.service.policy_store import PolicyStore, load_policy_dir
from meshca.service.ports import AuditEntry

POLICY = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
          "metadata": {"name": "p", "namespace": "shop"}, "spec": {"action": "DENY", "rules": [{}]}}


def _entry(action: str) -> AuditEntry:
    return AuditEntry(at=datetime.now(UTC), actor="admin-token:test", action=action,
                      target="shop/p", outcome="ok")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'a.db'}"


def test_put_and_delete_are_versioned_and_audited(url: str) -> None:
    engine = open_engine(url)
    try:
        migrate(engine)
        stored = SqlPolicies(engine)
        assert stored.all() == (0, [])
        row, created = stored.put("shop", "p", POLICY, _entry("authz.policy.put"))
        assert created and row.version == 1
        row, created = stored.put("shop", "p", POLICY, _entry("authz.policy.put"))
        assert not created and row.version == 2
        version, rows = stored.all()
        assert version == 2 and [r.document for r in rows] == [POLICY]
        assert stored.delete("shop", "p", _entry("authz.policy.delete")) == 3
        with pytest.raises(NotFound):
            stored.delete("shop", "p", _entry("authz.policy.delete"))
        actions = [r.entry.action for r in list_audit(engine, after_id=0, limit=10)]
        assert actions == ["authz.policy.put", "authz.policy.put", "authz.policy.delete"]
    finally:
        engine.dispose()


def test_policy_dir_loads_and_refuses_with_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                                     "metadata: {name: a, namespace: shop}\nspec: {}\n")
    (tmp_path / "notes.txt").write_text("ignored")
    assert [p.key for p in load_policy_dir(tmp_path)] == ["shop/a"]
    (tmp_path / "b.yml").write_text("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                                    "metadata: {name: b, namespace: shop}\nspec: {action: DENY}\n")
    with pytest.raises(Invalid) as caught:
        load_policy_dir(tmp_path)
    assert caught.value.errors[0].field == "b.yml[0].spec.rules"


def test_store_swaps_whole_versions_and_later_sources_win(tmp_path: Path) -> None:
    store = PolicyStore()
    first = store.current
    (tmp_path / "a.yaml").write_text("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                                     "metadata: {name: a, namespace: shop}\nspec: {}\n")
    store.replace("api", load_policy_dir(tmp_path))
    store.replace("dir", load_policy_dir(tmp_path))
    assert first.version == 0 and len(first) == 0  # the old version is untouched
    assert store.current.version == 2 and len(store.current) == 1
    assert store.source_of("shop/a") == "dir"
