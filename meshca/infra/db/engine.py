"""Opening the database and bringing its schema up to date."""

from __future__ import annotations

import contextlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

_MIGRATIONS = str(Path(__file__).with_name("migrations"))
# Any constant works; it only has to be the same in every replica.
_MIGRATION_LOCK_KEY = 0x6D657368  # "mesh"


def database_url_for(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'meshca.db'}"


# SQLite connections per engine, all of them opened at start in a long-running process, and no
# more: a peak beyond them waits for one (SQLite runs one writer at a time anyway). No overflow,
# because SQLite cannot close the file of a closed connection while another connection of the
# process holds a lock on it: each peak would leave its files open, for good. Reused most-recent
# first, so that a quiet server warms the page cache of one connection, not of all.
SQLITE_POOL_SIZE = 8


def open_engine(url: str, *, filled: bool = False) -> Engine:
    """`filled`: open the SQLite pool's connections now (a long-running process). Filled lazily,
    a pool grows by one connection at each new peak of concurrency, for hours: its database
    handles would look like a leak to anyone watching them (the soak does)."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False},
                               pool_size=SQLITE_POOL_SIZE, max_overflow=0,
                               pool_use_lifo=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        if filled:
            with contextlib.ExitStack() as held:
                for _ in range(SQLITE_POOL_SIZE):
                    held.enter_context(engine.connect())
        return engine
    # A database that stops answering must fail requests (UNAVAILABLE, not ready), not hang them.
    return create_engine(parsed, pool_size=8, max_overflow=8, pool_pre_ping=True,
                         connect_args={"connect_timeout": 5})


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    # The sqlite3 module would only BEGIN before the first write, leaving reads that decide a
    # write (is this identity blocked?) outside the transaction; SQLAlchemy begins instead.
    dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Checkpoint every 8,192 WAL pages (32 MiB) instead of SQLite's 1,000: the index pages every
    # insert touches are copied back once per checkpoint, not once per thousand pages, which
    # took a one-record commit on a 50k-row log from 1.2-2.5 ms of wall time to 0.6-0.9 ms.
    cursor.execute("PRAGMA wal_autocheckpoint=8192")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def migrate(engine: Engine) -> None:
    """Upgrade to the newest schema; on PostgreSQL replicas take turns under an advisory lock."""
    config = Config()
    config.set_main_option("script_location", _MIGRATIONS)
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _sqlite_begin(connection: Connection) -> None:
    """Every SQLite transaction takes the write lock up front (BEGIN IMMEDIATE).

    A deferred transaction that reads and then writes must upgrade its lock; two processes
    doing so at once (workers, the admin API) make one fail with "database is locked" at once
    instead of waiting. Taking the lock first makes them queue within the busy timeout, and
    keeps each check-then-write atomic.
    """
    connection.exec_driver_sql("BEGIN IMMEDIATE")
