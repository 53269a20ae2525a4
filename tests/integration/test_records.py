"""Every issued certificate is committed before the response leaves: SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import select, text

from meshca.infra.db.engine import open_engine
from meshca.infra.db.schema import ca_generations, issued_certificates
from tests.support import MeshcaProcess, csr_pem, start_meshca


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> MeshcaProcess:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    proc = start_meshca(tmp_path / "data", database_url=url)
    request.addfinalizer(proc.stop)
    return proc


def _rows(server: MeshcaProcess) -> list[dict[str, Any]]:
    engine = open_engine(server.database_url)
    try:
        with engine.connect() as connection:
            return [dict(r) for r in connection.execute(
                select(issued_certificates).order_by(issued_certificates.c.issued_at)).mappings()]
    finally:
        engine.dispose()


def test_record_holds_what_was_issued(server: MeshcaProcess) -> None:
    token = server.token("shop", "cart", pod_name="cart-7d9f-x2")
    chain = server.create_certificate(csr_pem(), token=token)
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    [row] = _rows(server)
    assert row["serial"] == f"{leaf.serial_number:x}"
    assert row["spiffe_id"] == "spiffe://cluster.local/ns/shop/sa/cart"
    assert (row["namespace"], row["service_account"]) == ("shop", "cart")
    assert row["pod_name"] == "cart-7d9f-x2"
    assert row["pod_uid"]
    assert row["not_before"] == leaf.not_valid_before_utc
    assert row["not_after"] == leaf.not_valid_after_utc
    assert row["fingerprint_sha256"] == leaf.fingerprint(hashes.SHA256()).hex()
    assert row["key_type"] == "ECDSA secp256r1"
    assert row["certificate_pem"] == chain[0]
    engine = open_engine(server.database_url)
    try:
        with engine.connect() as connection:
            issuer = connection.execute(select(ca_generations).where(
                ca_generations.c.id == row["issuer_generation_id"])).mappings().one()
    finally:
        engine.dispose()
    assert issuer["kind"] == "intermediate"
    assert x509.load_pem_x509_certificate(issuer["certificate_pem"].encode()).subject == leaf.issuer


def test_concurrent_issuance_records_each_certificate_once(server: MeshcaProcess) -> None:
    token = server.token("load", "gen")
    with ThreadPoolExecutor(16) as pool:
        chains = list(pool.map(lambda _: server.create_certificate(csr_pem(), token=token), range(120)))
    serials = {f"{x509.load_pem_x509_certificate(c[0].encode()).serial_number:x}" for c in chains}
    assert len(serials) == 120
    rows = _rows(server)
    assert sorted(r["serial"] for r in rows) == sorted(serials)


def test_no_certificate_leaves_when_it_cannot_be_recorded(server: MeshcaProcess) -> None:
    """With the records table gone, CreateCertificate is UNAVAILABLE (retryable), not issued:
    the driver's own error (the batch writer runs on the driver connection) is mapped too."""
    try:
        server.create_certificate(csr_pem())
        engine = open_engine(server.database_url)
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE issued_certificates RENAME TO issued_hidden"))
        try:
            with pytest.raises(grpc.RpcError) as err:
                server.create_certificate(csr_pem())
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            with engine.begin() as connection:
                connection.execute(text("ALTER TABLE issued_hidden RENAME TO issued_certificates"))
            engine.dispose()
        server.create_certificate(csr_pem())
        assert server.issued_count() == 2
        assert "Traceback" not in server.log_text()
    finally:
        server.stop()
