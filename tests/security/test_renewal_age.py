"""A certificate cannot renew itself for ever: a certificate obtained by renewing with a
certificate inherits the time of its lineage's last token check, and once that is older than
`--max-renewal-age` (default 7d) renewal by certificate is refused until a token is shown."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from sqlalchemy import select, update

from meshca.infra.db.schema import issued_certificates
from tests.security.limits_support import database, metric, renew
from tests.support import MeshcaProcess, csr_pem, ec_key, start_meshca

T = issued_certificates.c


def serial_of(chain: list[str]) -> str:
    return f"{x509.load_pem_x509_certificate(chain[0].encode()).serial_number:x}"


def checked_at(server: MeshcaProcess, chain: list[str]) -> datetime | None:
    with database(server) as connection:
        value = connection.execute(select(T.token_checked_at).where(
            T.serial == serial_of(chain))).scalar_one()
    assert value is None or isinstance(value, datetime)
    return value


def set_row(server: MeshcaProcess, chain: list[str], **values: Any) -> None:
    with database(server) as connection:
        connection.execute(update(issued_certificates).where(T.serial == serial_of(chain))
                           .values(**values))


def issue(server: MeshcaProcess) -> tuple[list[str], Any]:
    key = ec_key()
    return server.create_certificate(csr_pem(key), token=server.token("shop", "cart")), key


def refused(server: MeshcaProcess, chain: list[str], key: Any) -> str:
    before = server.issued_count()
    with pytest.raises(grpc.RpcError) as raised:
        renew(server, chain, key)
    error = raised.value
    assert isinstance(error, grpc.Call)
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED, error.details()
    assert server.issued_count() == before
    return error.details() or ""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MeshcaProcess]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    process = start_meshca(tmp_path / "data", database_url=url)
    yield process
    process.stop()


def test_a_lineage_of_renewals_needs_a_token_again_after_seven_days(server: MeshcaProcess) -> None:
    first, key = issue(server)
    checked = checked_at(server, first)
    assert checked is not None and abs(checked - datetime.now(UTC)) < timedelta(minutes=1)

    second, second_key = renew(server, first, key)
    third, third_key = renew(server, second, second_key)
    assert checked_at(server, second) == checked_at(server, third) == checked  # inherited

    eight_days_ago = datetime.now(UTC) - timedelta(days=8)
    set_row(server, third, token_checked_at=eight_days_ago)
    details = refused(server, third, third_key)
    assert details.startswith("present a service-account token: the last token check for this "
                              f"identity was at {eight_days_ago:%Y-%m-%dT%H:%M:%SZ}")
    assert metric(server, "meshca_authentication_failures_total", reason="renewal_age") == 1

    # Six days is within the limit; the other branches of the lineage are unaffected.
    set_row(server, third, token_checked_at=datetime.now(UTC) - timedelta(days=6))
    renew(server, third, third_key)
    renew(server, second, second_key)

    # A token resets the clock for the new lineage.
    fresh, fresh_key = issue(server)
    assert renew(server, fresh, fresh_key)


def test_rows_from_before_the_migration_count_their_own_issue_time(server: MeshcaProcess) -> None:
    chain, key = issue(server)
    set_row(server, chain, token_checked_at=None, issued_at=datetime.now(UTC) - timedelta(days=8))
    assert "present a service-account token" in refused(server, chain, key)
    set_row(server, chain, issued_at=datetime.now(UTC) - timedelta(days=1))
    renewed, _ = renew(server, chain, key)
    inherited = checked_at(server, renewed)
    assert inherited is not None and datetime.now(UTC) - inherited > timedelta(hours=23)


def test_the_maximum_age_is_a_flag(tmp_path: Path) -> None:
    server = start_meshca(tmp_path / "data", "--max-renewal-age", "1h")
    try:
        chain, key = issue(server)
        set_row(server, chain, token_checked_at=datetime.now(UTC) - timedelta(minutes=50))
        chain, key = renew(server, chain, key)
        set_row(server, chain, token_checked_at=datetime.now(UTC) - timedelta(minutes=70))
        assert "present a service-account token" in refused(server, chain, key)
    finally:
        server.stop()
