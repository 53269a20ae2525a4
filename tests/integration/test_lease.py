"""One holder at a time, on SQLite and PostgreSQL, even when processes race."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from meshca.infra.db.engine import migrate, open_engine
from meshca.infra.db.lease import SqlLeases, holds
from meshca.infra.lease_holder import this_process

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(seconds=30)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'lease.db'}"


@pytest.fixture
def store(url: str) -> SqlLeases:
    engine = open_engine(url)
    migrate(engine)
    return SqlLeases(engine)


def test_one_holder_renews_and_a_successor_gets_a_new_fencing_token(store: SqlLeases) -> None:
    first = store.acquire("rotator", "a", TTL, T0)
    assert first is not None and first.fencing == 1
    assert store.acquire("rotator", "b", TTL, T0 + timedelta(seconds=10)) is None
    renewed = store.acquire("rotator", "a", TTL, T0 + timedelta(seconds=20))
    assert renewed is not None and renewed.fencing == 1
    assert renewed.expires_at == T0 + timedelta(seconds=50)
    assert store.acquire("rotator", "b", TTL, T0 + timedelta(seconds=49)) is None
    taken = store.acquire("rotator", "b", TTL, T0 + timedelta(seconds=50))
    assert taken is not None and taken.holder == "b" and taken.fencing == 2
    engine = store._engine
    with engine.begin() as connection:
        assert not holds(connection, renewed, T0 + timedelta(seconds=51))  # a is fenced off
        assert holds(connection, taken, T0 + timedelta(seconds=51))
        assert not holds(connection, taken, T0 + timedelta(seconds=81))  # expired


def test_release_lets_another_take_it_at_once(store: SqlLeases) -> None:
    lease = store.acquire("rotator", "a", TTL, T0)
    assert lease is not None
    store.release(lease)
    assert store.current("rotator") is None
    successor = store.acquire("rotator", "b", TTL, T0 + timedelta(seconds=1))
    assert successor is not None and successor.fencing == 1


def test_racing_threads_elect_exactly_one(store: SqlLeases) -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: store.acquire("race", f"h{i}", TTL, T0), range(8)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert store.current("race") == winners[0]


def _contend(url: str, holder: str, rounds: int, queue: multiprocessing.Queue[tuple[str, int, int]]) -> None:
    engine = open_engine(url)
    store = SqlLeases(engine)
    for step in range(rounds):
        now = T0 + timedelta(seconds=step * 10)  # every third step the 25 s lease has lapsed
        lease = store.acquire("rotator", holder, timedelta(seconds=25), now)
        if lease is not None:
            queue.put((holder, step, lease.fencing))
    engine.dispose()


def test_two_processes_never_hold_one_fencing_token(url: str, store: SqlLeases) -> None:
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[tuple[str, int, int]] = context.Queue()
    processes = [context.Process(target=_contend, args=(url, name, 60, queue)) for name in "ab"]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    held: list[tuple[str, int, int]] = []
    while not queue.empty():
        held.append(queue.get())
    assert held, "somebody must have held the lease"
    by_token: dict[int, set[str]] = {}
    for holder, _, fencing in held:
        by_token.setdefault(fencing, set()).add(holder)
    assert all(len(holders) == 1 for holders in by_token.values()), by_token


def _identity_of_a_process_that_ended() -> str:
    """The lease-holder identity of a real process on this host, which has exited since."""
    ran = subprocess.run([sys.executable, "-c", "from meshca.infra.lease_holder import this_process;"
                          "print(this_process())"], capture_output=True, text=True, check=True)
    return ran.stdout.strip()


def test_a_lease_whose_holder_was_killed_on_this_host_is_taken_over_at_once(store: SqlLeases) -> None:
    gone = _identity_of_a_process_that_ended()
    held = store.acquire("rotator", gone, timedelta(hours=1), T0)
    assert held is not None and held.fencing == 1
    successor = store.acquire("rotator", this_process(), TTL, T0 + timedelta(seconds=1))
    assert successor is not None and successor.holder == this_process()
    assert successor.fencing == 2  # the dead holder's token is fenced off
    with store._engine.begin() as connection:
        assert not holds(connection, held, T0 + timedelta(seconds=2))


def test_a_live_holder_or_one_that_cannot_be_proven_gone_keeps_its_lease(
        store: SqlLeases, tmp_path: Path) -> None:
    alive = subprocess.Popen([sys.executable, "-c", "from meshca.infra.lease_holder import this_process;"
                              "import sys, time; print(this_process(), flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert alive.stdout is not None
        live = alive.stdout.readline().strip()
        ended = _identity_of_a_process_that_ended()
        gone_elsewhere = "other-host" + ended[ended.index("/"):]
        for index, holder in enumerate([live, gone_elsewhere, "replica-a", "host/123"]):
            name = f"lease-{index}"
            assert store.acquire(name, holder, timedelta(hours=1), T0) is not None
            assert store.acquire(name, this_process(), TTL, T0 + timedelta(seconds=1)) is None, holder
            current = store.current(name)
            assert current is not None and current.holder == holder and current.fencing == 1
    finally:
        alive.kill()
        alive.wait()
