"""The Alembic migrations build exactly the schema the code declares, on SQLite and PostgreSQL,
and running them again (another replica starting) changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from meshca.infra.db.engine import migrate, open_engine
from meshca.infra.db.schema import metadata


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'm.db'}"


def test_migrations_match_the_declared_schema(url: str) -> None:
    engine = open_engine(url)
    try:
        migrate(engine)
        migrate(engine)  # idempotent: a second replica finds nothing to do
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
            tables = set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    assert differences == []
    assert {t.name for t in metadata.sorted_tables} <= tables
