from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import MeshcaProcess, postgres_url, reset_postgres, start_meshca


@pytest.fixture(scope="module")
def meshca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshcaProcess]:
    """One embedded-defaults server (SQLite, development issuer) per test module."""
    server = start_meshca(tmp_path_factory.mktemp("meshca") / "data")
    yield server
    server.stop()


@pytest.fixture
def pg_url() -> str:
    """The PostgreSQL test database, emptied; in CI its absence is a failure, not a skip."""
    url = postgres_url()
    if not url:
        if os.environ.get("CI"):
            pytest.fail("MESHCA_TEST_POSTGRES_URL is not set in CI")
        pytest.skip("MESHCA_TEST_POSTGRES_URL is not set")
    try:
        reset_postgres(url)
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {url} is not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    return url


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
