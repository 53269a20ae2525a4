"""One behaviour for the FederationStore port: the in-memory fake, and the SQL adapter on
SQLite and PostgreSQL (so the fake the unit tests use cannot drift)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from meshca.core.federation import HTTPS_SPIFFE, Relationship
from meshca.errors import Conflict, LostLease, NotFound
from meshca.infra.db.audit import list_audit
from meshca.infra.db.engine import migrate, open_engine
from meshca.infra.db.federation import SqlFederation
from meshca.infra.db.lease import SqlLeases
from meshca.service.ca_ports import Leases
from meshca.service.federation_ports import FederationStore, FetchResult
from meshca.service.ports import AuditEntry
from tests.fakes.federation import FakeFederationStore

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
B = Relationship("b.test", "https://b.example/", HTTPS_SPIFFE, "spiffe://b.test/e", "PEM")


def _audit(action: str, target: str) -> AuditEntry:
    return AuditEntry(at=T0, actor="token:ops", action=action, target=target, outcome="ok")


@pytest.fixture(params=["fake", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ports(request: pytest.FixtureRequest, tmp_path: Path,
          ) -> Iterator[tuple[FederationStore, Leases]]:
    if request.param == "fake":
        fake = FakeFederationStore()
        yield fake, fake.leases
        return
    url = (str(request.getfixturevalue("pg_url")) if request.param == "postgres"
           else f"sqlite:///{tmp_path / 'f.db'}")
    engine = open_engine(url)
    migrate(engine)
    try:
        yield SqlFederation(engine), SqlLeases(engine)
    finally:
        engine.dispose()


def test_relationships_and_their_bundles(ports: tuple[FederationStore, Leases]) -> None:
    store, leases = ports
    assert store.all() == []
    with pytest.raises(NotFound):
        store.get("b.test")
    assert store.put(B, _audit("federation.put", "b.test")) is True
    with pytest.raises(Conflict):
        store.put(B, _audit("federation.put", "b.test"), create_only=True)
    assert store.get("b.test").relationship == B
    lease = leases.acquire("federation-fetch", "r1", timedelta(minutes=1), T0)
    assert lease is not None
    good = FetchResult(at=T0, outcome="ok", next_fetch_at=T0 + timedelta(minutes=5),
                       document=b'{"keys": []}', sequence=4, changed=True)
    store.record_fetch(lease, "b.test", good)
    record = store.get("b.test")
    assert (record.document, record.sequence, record.fetched_at, record.changed_at) == (
        b'{"keys": []}', 4, T0, T0)
    later = T0 + timedelta(seconds=10)
    store.record_fetch(lease, "b.test", FetchResult(at=later, outcome="timeout",
                                                    next_fetch_at=later, error="slow"))
    record = store.get("b.test")
    assert (record.document, record.sequence, record.fetched_at) == (b'{"keys": []}', 4, T0)
    assert (record.outcome, record.error, record.attempted_at) == ("timeout", "slow", later)
    # A put keeps the bundle and makes the next fetch due at once.
    assert store.put(Relationship("b.test", "https://new/"), _audit("federation.put", "b.test")) \
        is False
    record = store.get("b.test")
    assert record.document == b'{"keys": []}' and record.next_fetch_at is None
    assert record.relationship.url == "https://new/"
    # A replica whose lease expired and passed on writes nothing.
    taken = leases.acquire("federation-fetch", "r2", timedelta(minutes=1), T0 + timedelta(minutes=2))
    assert taken is not None
    with pytest.raises(LostLease):
        store.record_fetch(lease, "b.test", FetchResult(at=T0 + timedelta(minutes=2),
                                                        outcome="ok", next_fetch_at=T0))
    store.record_fetch(taken, "gone.test", good)  # deleted meanwhile: nothing happens
    store.delete("b.test", _audit("federation.delete", "b.test"))
    with pytest.raises(NotFound):
        store.delete("b.test", _audit("federation.delete", "b.test"))
    assert store.all() == []
    if isinstance(store, SqlFederation):
        actions = [r.entry.action for r in list_audit(store._engine, after_id=0, limit=10)]
    else:
        assert isinstance(store, FakeFederationStore)
        actions = [e.action for e in store.audit]
    assert actions == ["federation.put", "federation.put", "federation.delete"]
