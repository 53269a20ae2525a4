"""Retention: audit rows older than `--audit-retention` and certificate rows expired longer
than `--certificate-retention` are deleted by one replica under a lease, in bounded batches;
revoked certificates stay until their own expiry plus the grace (the CRL lists them until they
expire). The job is driven with a hand-moved clock on SQLite and PostgreSQL, then a real
server is watched doing it, with its metrics."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select, update

from meshca.infra.db.engine import migrate, open_engine
from meshca.infra.db.lease import Lease, SqlLeases
from meshca.infra.db.retention import AUDIT, CERTIFICATES, SqlRetention
from meshca.infra.db.schema import audit_log, ca_generations, issued_certificates, leases
from meshca.service.retention import RETENTION_LEASE, RetentionJob, RetentionPolicy
from tests.security.limits_support import ManualClock, database, metric, wait_for
from tests.support import MeshcaProcess, csr_pem, start_meshca

T0 = datetime(2030, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
POLICY = RetentionPolicy(audit=timedelta(days=90), certificates=timedelta(days=7), batch=1000)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = (str(request.getfixturevalue("pg_url")) if request.param == "postgres"
           else f"sqlite:///{tmp_path / 'r.db'}")
    engine = open_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()


def _generation(engine: Engine) -> int:
    with engine.begin() as connection:
        inserted = connection.execute(insert(ca_generations).values(
            kind="intermediate", parent_id=None, subject="CN=test", serial="01", key_type="ec-p256",
            key_location="-", not_before=T0 - 400 * DAY, not_after=T0 + 400 * DAY, state="active",
            certificate_pem="-", created_at=T0 - 400 * DAY)).inserted_primary_key
    assert inserted is not None
    return int(inserted[0])


def _certificate(engine: Engine, serial: str, generation: int, not_after: datetime,
                 revoked_at: datetime | None = None) -> None:
    with engine.begin() as connection:
        connection.execute(insert(issued_certificates).values(
            serial=serial, spiffe_id="spiffe://cluster.local/ns/a/sa/b", namespace="a",
            service_account="b", pod_name=None, pod_uid=None, not_before=not_after - DAY,
            not_after=not_after, issuer_generation_id=generation, fingerprint_sha256="0" * 64,
            key_type="ECDSA secp256r1", issued_at=not_after - DAY, certificate_pem="-",
            revoked_at=revoked_at, revocation_reason="keyCompromise" if revoked_at else None))


def _audit(engine: Engine, at: datetime, count: int) -> None:
    with engine.begin() as connection:
        connection.execute(insert(audit_log), [
            {"at": at, "actor": "t", "action": "x", "target": "", "outcome": "ok", "detail": None}
            for _ in range(count)])


def _serials(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(select(issued_certificates.c.serial)).scalars())


def _audit_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(audit_log)).scalar_one())


class CountingStore(SqlRetention):
    """The real store, noting each batch; `after_first` runs once, after the first batch."""

    def __init__(self, engine: Engine, after_first: object = None) -> None:
        super().__init__(engine)
        self.batches: list[tuple[str, int]] = []
        self._after_first = after_first

    def prune_batch(self, table: str, cutoff: datetime, limit: int, lease: Lease,
                    now: datetime) -> int | None:
        count = super().prune_batch(table, cutoff, limit, lease, now)
        self.batches.append((table, count or 0))
        if len(self.batches) == 1 and callable(self._after_first):
            self._after_first()
        return count


def test_old_rows_go_in_batches_and_revoked_certificates_stay_until_they_expire(
        engine: Engine) -> None:
    generation = _generation(engine)
    _audit(engine, T0 - 100 * DAY, 2500)
    _audit(engine, T0 - 89 * DAY, 3)
    _certificate(engine, "a1", generation, T0 - 8 * DAY)  # expired beyond the grace: goes
    _certificate(engine, "b2", generation, T0 - 6 * DAY)  # within the grace: stays
    _certificate(engine, "c3", generation, T0 + 10 * DAY, revoked_at=T0 - 20 * DAY)  # in the CRL
    _certificate(engine, "d4", generation, T0 - 8 * DAY, revoked_at=T0 - 30 * DAY)  # expired: goes
    store = CountingStore(engine)
    job = RetentionJob(store, SqlLeases(engine), POLICY, ManualClock(T0), identity="me")

    job.tick()

    assert store.batches == [(AUDIT, 1000), (AUDIT, 1000), (AUDIT, 500), (CERTIFICATES, 2)]
    assert _serials(engine) == {"b2", "c3"}
    assert _audit_count(engine) == 3
    assert job.pruned == {AUDIT: 2500, CERTIFICATES: 2}
    assert job.stored == {AUDIT: 3, CERTIFICATES: 2}
    assert SqlLeases(engine).current(RETENTION_LEASE) is None  # given back after the pass


def test_only_the_lease_holder_prunes(engine: Engine) -> None:
    generation = _generation(engine)
    _certificate(engine, "a1", generation, T0 - 8 * DAY)
    clock = ManualClock(T0)
    assert SqlLeases(engine).acquire(RETENTION_LEASE, "other-replica", timedelta(minutes=2), T0)
    job = RetentionJob(SqlRetention(engine), SqlLeases(engine), POLICY, clock, identity="me")

    assert job.prune() is None
    job.tick()
    assert _serials(engine) == {"a1"} and job.stored[CERTIFICATES] == 1

    clock.advance(timedelta(minutes=3))  # the other replica's lease ran out
    assert job.prune() == {AUDIT: 0, CERTIFICATES: 1}
    assert _serials(engine) == set()


def test_a_replica_that_loses_the_lease_stops_between_batches(engine: Engine) -> None:
    _audit(engine, T0 - 100 * DAY, 2500)

    def steal() -> None:
        with engine.begin() as connection:
            connection.execute(update(leases).where(leases.c.name == RETENTION_LEASE).values(
                holder="thief", fencing=leases.c.fencing + 1, expires_at=T0 + DAY))

    store = CountingStore(engine, after_first=steal)
    job = RetentionJob(store, SqlLeases(engine), POLICY, ManualClock(T0), identity="me")
    assert job.prune() == {AUDIT: 1000, CERTIFICATES: 0}
    assert _audit_count(engine) == 1500
    current = SqlLeases(engine).current(RETENTION_LEASE)
    assert current is not None and current.holder == "thief"  # not released by the loser


def test_retention_settings_are_checked() -> None:
    from meshca.config import Settings
    with pytest.raises(ValueError, match="at least --rotation-skew"):
        Settings(certificate_retention=timedelta(minutes=5))
    with pytest.raises(ValueError, match="positive"):
        RetentionPolicy(audit=timedelta(0), certificates=DAY)


# ---- a real server -------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MeshcaProcess]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    process = start_meshca(tmp_path / "data", "--retention-interval", "0.5s",
                           "--certificate-retention", "1h", "--audit-retention", "1d",
                           database_url=url)
    yield process
    process.stop()


def test_a_server_deletes_what_retention_allows_and_counts_it(server: MeshcaProcess) -> None:
    serials = []
    for account in ("kept", "expired", "in-grace", "revoked"):
        server.create_certificate(csr_pem(), token=server.token("shop", account))
    now = datetime.now(UTC)
    t = issued_certificates.c
    with database(server) as connection:
        rows = dict(connection.execute(select(t.service_account, t.serial)).all())
        serials = [rows[a] for a in ("kept", "expired", "in-grace", "revoked")]
        kept, expired, in_grace, revoked = serials
        # As if time had passed: one expired two hours ago, one half an hour ago.
        connection.execute(update(issued_certificates).where(t.serial == expired).values(
            not_before=now - timedelta(hours=3), not_after=now - timedelta(hours=2)))
        connection.execute(update(issued_certificates).where(t.serial == in_grace).values(
            not_before=now - timedelta(hours=3), not_after=now - timedelta(minutes=30)))
        connection.execute(update(issued_certificates).where(t.serial == revoked).values(
            revoked_at=now - timedelta(days=3), revocation_reason="keyCompromise"))
        connection.execute(insert(audit_log), [
            {"at": now - timedelta(days=2), "actor": "t", "action": "old", "target": "",
             "outcome": "ok"},
            {"at": now - timedelta(hours=12), "actor": "t", "action": "recent", "target": "",
             "outcome": "ok"}])

    def remaining() -> set[str]:
        with database(server) as connection:
            return set(connection.execute(select(t.serial)).scalars())

    wait_for(lambda: expired not in remaining(), what="the expired certificate to be deleted")
    assert remaining() == {kept, in_grace, revoked}
    with database(server) as connection:
        actions = set(connection.execute(select(audit_log.c.action)).scalars())
    assert "recent" in actions and "old" not in actions

    wait_for(lambda: metric(server, "meshca_stored_rows", table=CERTIFICATES) == 3,
             what="the stored-rows gauge")
    assert metric(server, "meshca_retention_pruned_total", table=CERTIFICATES) == 1
    assert metric(server, "meshca_retention_pruned_total", table=AUDIT) == 1
    assert metric(server, "meshca_stored_rows", table=AUDIT) >= 1
