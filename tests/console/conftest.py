from __future__ import annotations

import os

import pytest

from tests.console.browser import missing_browser, screenshots_dir


@pytest.fixture(scope="session")
def browser_available() -> None:
    """Skip with the reason where no browser can be installed; in CI that is a failure."""
    reason = missing_browser()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"headless Chromium is required in CI (CI is set): {reason}")
    pytest.skip(f"no headless Chromium: {reason}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    shots = screenshots_dir()
    if any(shots.glob("*.png")):
        terminalreporter.write_line(f"console screenshots: {shots}")
