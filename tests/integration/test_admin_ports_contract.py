"""One behaviour suite for the admin ports (service/admin_ports.py), run against the in-memory
fakes (tests/fakes/) and the SQL adapters on SQLite and PostgreSQL: the fakes the unit tests
rely on behave as the database does, mutation and audit row together."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert

from meshca.core.roles import Role
from meshca.errors import Conflict, NotFound, StoreUnavailable
from meshca.infra.db.admin_tokens import SqlAdminTokens
from meshca.infra.db.audit import SqlAuditLog
from meshca.infra.db.engine import migrate, open_engine
from meshca.infra.db.inventory import SqlInventory
from meshca.infra.db.policies import SqlPolicies
from meshca.infra.db.probe import SqlStoreProbe
from meshca.infra.db.schema import (
    admin_tokens,
    audit_log,
    authz_policies,
    authz_state,
    blocked_identities,
    ca_generations,
    issued_certificates,
)
from meshca.service.admin_ports import (
    AdminTokenStore,
    AuditFilter,
    AuditLog,
    CertificateDetail,
    CertificateFilter,
    Position,
    StoredPolicies,
    StoreProbe,
)
from meshca.service.ports import AuditEntry
from tests.fakes.admin_tokens import FakeAdminTokens
from tests.fakes.audit import FakeAuditLog
from tests.fakes.ca_generations import FakeStoreProbe
from tests.fakes.inventory import FakeInventory
from tests.fakes.policies import FakeStoredPolicies
from tests.support import postgres_url, reset_postgres
from tests.unit.admin_fixtures import certificate
from tests.unit.pki import NOW

HOUR = timedelta(hours=1)
API = "spiffe://cluster.local/ns/shop/sa/api"


@dataclass
class Ports:
    inventory: Any  # a CertificateInventory and an IdentityBlocklist
    tokens: AdminTokenStore
    audit: AuditLog
    policies: StoredPolicies
    probe: StoreProbe
    add_generation: Callable[[int, str, int | None], None]
    add: Callable[[CertificateDetail], None]


def _fakes() -> Ports:
    log = FakeAuditLog()
    inventory = FakeInventory(log)
    return Ports(inventory, FakeAdminTokens(log), log, FakeStoredPolicies(log), FakeStoreProbe(),
                 inventory.add_generation, inventory.add)


def _sql(engine: Engine) -> Ports:
    def add_generation(generation_id: int, state: str, parent_id: int | None) -> None:
        with engine.begin() as connection:
            connection.execute(insert(ca_generations).values(
                id=generation_id, kind="root" if parent_id is None else "intermediate",
                parent_id=parent_id, subject=f"g{generation_id}", serial=f"{generation_id:x}",
                key_type="ec-p256", key_location=f"file:g{generation_id}", not_before=NOW - HOUR,
                not_after=NOW + 1000 * HOUR, state=state, certificate_pem="", created_at=NOW))

    def add(detail: CertificateDetail) -> None:
        with engine.begin() as connection:
            connection.execute(insert(issued_certificates).values(
                {f: getattr(detail, f) for f in CertificateDetail.__dataclass_fields__}))

    return Ports(SqlInventory(engine), SqlAdminTokens(engine), SqlAuditLog(engine),
                 SqlPolicies(engine), SqlStoreProbe(engine), add_generation, add)


_TABLES = (audit_log, blocked_identities, admin_tokens, authz_policies, authz_state,
           issued_certificates, ca_generations)


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = open_engine(f"sqlite:///{tmp_path_factory.mktemp('contract') / 'a.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def postgres_engine() -> Iterator[Engine]:
    url = postgres_url()
    if not url:
        if os.environ.get("CI"):
            pytest.fail("MESHCA_TEST_POSTGRES_URL is not set in CI")
        pytest.skip("MESHCA_TEST_POSTGRES_URL is not set")
    reset_postgres(url)
    engine = open_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["fake", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ports(request: pytest.FixtureRequest) -> Ports:
    if request.param == "fake":
        found = _fakes()
    else:
        engine: Engine = request.getfixturevalue(f"{request.param}_engine")
        with engine.begin() as connection:
            for table in _TABLES:
                connection.execute(delete(table))
        found = _sql(engine)
    found.add_generation(1, "active", None)
    found.add_generation(7, "active", 1)
    return found


def _entry(action: str, target: str, at_offset: int = 0) -> AuditEntry:
    return AuditEntry(at=NOW + timedelta(seconds=at_offset), actor="token:ops", action=action,
                      target=target, outcome="ok")


def _actions(ports: Ports) -> list[tuple[str, str]]:
    return [(r.entry.action, r.entry.target) for r in ports.audit.page(0, 100)]


# ---- certificate inventory ------------------------------------------------------------------

def test_page_orders_by_issue_time_then_serial_and_continues_after_a_position(ports: Ports) -> None:
    for serial, minutes in (("0c", 0), ("0a", 0), ("0b", -5), ("0d", 10)):
        ports.add(certificate(serial, issued=timedelta(minutes=minutes)))
    first = ports.inventory.page(CertificateFilter(), None, 2, NOW)
    assert [c.serial for c in first] == ["0b", "0a"]
    rest = ports.inventory.page(CertificateFilter(), first[-1].position, 10, NOW)
    assert [c.serial for c in rest] == ["0c", "0d"]
    assert not hasattr(rest[0], "certificate_pem")


def test_page_filters(ports: Ports) -> None:
    ports.add(certificate("01", namespace="shop", account="web"))
    ports.add(certificate("02", namespace="shop", account="cart", valid=HOUR))
    ports.add(certificate("03", namespace="bank", account="web", revoked_at=NOW, reason="superseded"))
    ports.add(certificate("04", namespace="shop_x", account="web"))

    def serials(**kw: Any) -> list[str]:
        return [c.serial for c in ports.inventory.page(CertificateFilter(**kw), None, 10,
                                                       NOW + 2 * HOUR)]

    assert serials(namespace="shop") == ["01", "02"]
    assert serials(service_account="web") == ["01", "03", "04"]
    assert serials(spiffe_id_prefix="spiffe://cluster.local/ns/shop_") == ["04"]  # `_` is literal
    assert serials(active=True) == ["01", "04"]
    assert serials(active=False) == ["02", "03"]
    assert serials(expiring_before=NOW + 2 * HOUR) == ["02"]
    assert serials(serial_prefix="0") == ["01", "02", "03", "04"]
    assert serials(serial_prefix="03") == ["03"]
    assert serials(serial_prefix="1") == []


def test_page_after_a_position_in_another_time_zone(ports: Ports) -> None:
    from datetime import timezone
    ports.add(certificate("01"))
    ports.add(certificate("02", issued=HOUR))
    later = Position(NOW.astimezone(timezone(timedelta(hours=5))), "01")
    assert [c.serial for c in ports.inventory.page(CertificateFilter(), later, 10, NOW)] == ["02"]


def test_get_has_the_pem_and_unknown_serials_are_not_found(ports: Ports) -> None:
    ports.add(certificate("0a"))
    assert ports.inventory.get("0a") == certificate("0a")
    with pytest.raises(NotFound):
        ports.inventory.get("0b")


def test_revoke_writes_the_change_and_its_audit_entry_or_neither(ports: Ports) -> None:
    ports.add(certificate("0a"))
    ports.inventory.revoke("0a", "keyCompromise", _entry("certificate.revoke", "0a", 5))
    revoked = ports.inventory.get("0a")
    assert (revoked.revoked_at, revoked.revocation_reason) == (NOW + timedelta(seconds=5),
                                                               "keyCompromise")
    with pytest.raises(Conflict):
        ports.inventory.revoke("0a", "superseded", _entry("certificate.revoke", "0a"))
    with pytest.raises(NotFound):
        ports.inventory.revoke("0b", "superseded", _entry("certificate.revoke", "0b"))
    assert _actions(ports) == [("certificate.revoke", "0a")]


def test_revoked_by_lists_one_issuers_unexpired_revocations_by_serial(ports: Ports) -> None:
    ports.add_generation(8, "active", 1)
    ports.add(certificate("0b", revoked_at=NOW, reason="superseded"))
    ports.add(certificate("0a", revoked_at=NOW, reason="keyCompromise"))
    ports.add(certificate("0c", revoked_at=NOW, reason="superseded", valid=HOUR))
    ports.add(certificate("0d"))
    ports.add(certificate("0e", issuer=8, revoked_at=NOW, reason="superseded"))
    entries = ports.inventory.revoked_by(7, NOW + 2 * HOUR)
    assert [(e.serial, e.reason) for e in entries] == [("0a", "keyCompromise"), ("0b", "superseded")]


def test_usable_means_on_record_unrevoked_and_not_under_a_tainted_key(ports: Ports) -> None:
    ports.add_generation(8, "tainted", 1)
    ports.add_generation(2, "tainted", None)
    ports.add_generation(9, "active", 2)
    ports.add(certificate("01"))
    ports.add(certificate("02", revoked_at=NOW, reason="superseded"))
    ports.add(certificate("03", issuer=8))
    ports.add(certificate("04", issuer=9))
    assert [s for s in ("01", "02", "03", "04", "05") if ports.inventory.usable(s)] == ["01"]


# ---- identities -----------------------------------------------------------------------------

def test_block_and_unblock_with_their_audit_entries(ports: Ports) -> None:
    ports.inventory.block(API, "stolen", _entry("identity.block", API))
    ports.inventory.block("spiffe://cluster.local/ns/a/sa/b", "", _entry("identity.block", "b"))
    assert [(b.spiffe_id, b.reason, b.blocked_by, b.blocked_at) for b in ports.inventory.blocked()
            ] == [("spiffe://cluster.local/ns/a/sa/b", "", "token:ops", NOW),
                  (API, "stolen", "token:ops", NOW)]
    with pytest.raises(Conflict):
        ports.inventory.block(API, "again", _entry("identity.block", API))
    ports.inventory.unblock(API, _entry("identity.unblock", API))
    with pytest.raises(NotFound):
        ports.inventory.unblock(API, _entry("identity.unblock", API))
    assert _actions(ports) == [("identity.block", API), ("identity.block", "b"),
                               ("identity.unblock", API)]


# ---- admin tokens ---------------------------------------------------------------------------

def test_tokens_create_authenticate_and_revoke(ports: Ports) -> None:
    assert not ports.tokens.live_admin_exists()
    ports.tokens.create("a", Role.ADMIN, "mca_a", _entry("admin-token.create", "a"))
    ports.tokens.create("v", Role.VIEWER, "mca_v", _entry("admin-token.create", "v"))
    assert ports.tokens.live_admin_exists()
    assert ports.tokens.role_for("mca_v") == ("v", Role.VIEWER)
    assert ports.tokens.role_for("mca_nope") is None
    with pytest.raises(Conflict):
        ports.tokens.create("a", Role.VIEWER, "mca_other", _entry("admin-token.create", "a"))
    with pytest.raises(Conflict):  # the last live admin token
        ports.tokens.revoke("a", _entry("admin-token.revoke", "a"))
    ports.tokens.revoke("v", _entry("admin-token.revoke", "v", 3))
    with pytest.raises(NotFound):
        ports.tokens.revoke("v", _entry("admin-token.revoke", "v"))
    assert ports.tokens.role_for("mca_v") is None
    assert [(t.name, t.role, t.created_by, t.revoked_at) for t in ports.tokens.all()] == [
        ("a", Role.ADMIN, "token:ops", None),
        ("v", Role.VIEWER, "token:ops", NOW + timedelta(seconds=3))]
    assert _actions(ports) == [("admin-token.create", "a"), ("admin-token.create", "v"),
                               ("admin-token.revoke", "v")]


# ---- audit log, policies, probe -------------------------------------------------------------

def test_audit_log_pages_by_id(ports: Ports) -> None:
    for n in range(4):
        ports.audit.append(_entry("x.y", str(n)))
    first = ports.audit.page(0, 3)
    assert [r.entry.target for r in first] == ["0", "1", "2"]
    assert [r.entry.target for r in ports.audit.page(first[-1].id, 3)] == ["3"]
    assert first[0].entry == _entry("x.y", "0")


def test_audit_search_filters_by_substring_newest_or_oldest_first(ports: Ports) -> None:
    for action, target in (("ca.prepare", "root"), ("certificate.revoke", "ab%cd"),
                           ("identity.block", "spiffe://t/ns/a"), ("certificate.revoke", "abXcd")):
        ports.audit.append(_entry(action, target))
    newest = ports.audit.search(AuditFilter(), None, True, 10)
    assert [r.entry.target for r in newest] == ["abXcd", "spiffe://t/ns/a", "ab%cd", "root"]
    revokes = ports.audit.search(AuditFilter(action="revoke"), None, True, 1)
    assert [r.entry.target for r in revokes] == ["abXcd"]
    older = ports.audit.search(AuditFilter(action="revoke"), revokes[-1].id, True, 10)
    assert [r.entry.target for r in older] == ["ab%cd"]
    # Literal: '%' is no wildcard, so only the entry that holds it matches.
    assert [r.entry.target for r in ports.audit.search(AuditFilter(target="b%c"), None, False, 10)
            ] == ["ab%cd"]
    assert [r.entry.action for r in ports.audit.search(
        AuditFilter(actor="token:ops", target="spiffe://"), newest[-1].id, False, 10)
            ] == ["identity.block"]
    assert ports.audit.search(AuditFilter(actor="nobody"), None, True, 10) == []


def test_stored_policies_are_versioned_with_their_audit_entries(ports: Ports) -> None:
    document = {"kind": "AuthorizationPolicy", "metadata": {"namespace": "shop", "name": "p"}}
    row, created = ports.policies.put("shop", "p", document, _entry("authz.policy.put", "shop/p"))
    assert created and (row.version, row.document, row.updated_by) == (1, document, "token:ops")
    _, created = ports.policies.put("shop", "p", document, _entry("authz.policy.put", "shop/p"))
    assert not created
    version, rows = ports.policies.all()
    assert version == 2 and [(r.namespace, r.name, r.version) for r in rows] == [("shop", "p", 2)]
    assert ports.policies.delete("shop", "p", _entry("authz.policy.delete", "shop/p")) == 3
    with pytest.raises(NotFound):
        ports.policies.delete("shop", "p", _entry("authz.policy.delete", "shop/p"))
    assert ports.policies.all() == (3, [])
    assert [a for a, _ in _actions(ports)] == ["authz.policy.put"] * 2 + ["authz.policy.delete"]


def test_the_probe_answers(ports: Ports) -> None:
    ports.probe.ping()


def test_sql_adapters_turn_a_missing_database_into_store_unavailable(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'missing' / 'a.db'}")  # no such directory
    try:
        calls: list[Callable[[], object]] = [
            SqlStoreProbe(engine).ping, lambda: SqlAuditLog(engine).page(0, 1),
            lambda: SqlInventory(engine).get("0a"), SqlInventory(engine).blocked,
            SqlAdminTokens(engine).all, SqlPolicies(engine).version,
            lambda: SqlInventory(engine).block(API, "", _entry("identity.block", API)),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable, match="the database did not answer"):
                call()
    finally:
        engine.dispose()
