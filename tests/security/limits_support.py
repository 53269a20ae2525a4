"""What the limits tests (rate limits, refusal summaries, retention, identity limits, renewal
age) share: metrics scraped from a real server, its database read and edited directly, and a
clock the tests move by hand."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Connection, select

from meshca.infra.db.engine import open_engine
from meshca.infra.db.schema import audit_log
from meshca.infra.keyfiles import private_key_pem
from tests.support import MeshcaProcess, csr_pem, ec_key

T = TypeVar("T")


class ManualClock:
    def __init__(self, now: datetime | None = None) -> None:
        self.current = now or datetime(2030, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, span: timedelta) -> None:
        self.current += span


def metric(server: MeshcaProcess, name: str, **labels: str) -> float:
    """One sample of the server's /metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://{server.metrics_addr}/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


@contextmanager
def database(server: MeshcaProcess) -> Iterator[Connection]:
    """A transaction on the server's database (committed on leaving)."""
    engine = open_engine(server.database_url)
    try:
        with engine.begin() as connection:
            yield connection
    finally:
        engine.dispose()


def audit_rows(server: MeshcaProcess, after: int = 0) -> list[dict[str, Any]]:
    with database(server) as connection:
        return [dict(r) for r in connection.execute(
            select(audit_log).where(audit_log.c.id > after).order_by(audit_log.c.id)).mappings()]


def last_audit_id(server: MeshcaProcess) -> int:
    return max((r["id"] for r in audit_rows(server)), default=0)


def wait_for(condition: Callable[[], T | None], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll until `condition()` is truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def renew(server: MeshcaProcess, chain: list[str], key: Any) -> tuple[list[str], Any]:
    """Renewal as a sidecar holding a certificate does it: client certificate, no token.
    Returns the new chain and its key."""
    channel = server.channel("".join(chain[:-1]).encode(), private_key_pem(key))
    new_key = ec_key()
    try:
        return server.create_certificate(csr_pem(new_key), metadata=[], channel=channel), new_key
    finally:
        channel.close()
