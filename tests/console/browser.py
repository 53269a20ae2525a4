"""Real headless Chromium (Debian's chromium + chromium-driver) driven through Selenium.

The browser trusts the meshca server under test the way a person's would: its roots go into
the NSS database of a throw-away $HOME (certutil, Debian's libnss3-tools), and no certificate
error is waved through. Rotating the CA under a running browser keeps working, as it must."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CERTUTIL = Path("/usr/bin/certutil")
REPO = Path(__file__).resolve().parents[2]


def missing_browser() -> str | None:
    """Why no browser can run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver"),
                          (CERTUTIL, "libnss3-tools")):
        if not path.exists():
            return f"{path} is missing: install Debian's {package} (scripts/test does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "PyPI selenium is not installed (the test extra has it)"
    return None


def screenshots_dir() -> Path:
    """Where page screenshots go: $MESHCA_SCREENSHOTS_DIR, else build/screenshots in the repo."""
    return Path(os.environ.get("MESHCA_SCREENSHOTS_DIR") or REPO / "build" / "screenshots")


def save_screenshot(driver: Any, name: str) -> Path:
    """The whole page (not only the window) as build/screenshots/<name>.png."""
    path = screenshots_dir() / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot",
                                  {"format": "png", "captureBeyondViewport": True})
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def _trust(home: Path, roots_pem: bytes) -> None:
    """An NSS database in `home` that trusts each root as a TLS server CA."""
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run([str(CERTUTIL), "-N", "-d", f"sql:{nssdb}", "--empty-password"], check=True)
    for index, root in enumerate(x509.load_pem_x509_certificates(roots_pem)):
        path = home / f"root-{index}.pem"
        path.write_bytes(root.public_bytes(Encoding.PEM))
        subprocess.run([str(CERTUTIL), "-A", "-d", f"sql:{nssdb}", "-t", "C,,",
                        "-n", f"meshca-root-{index}", "-i", str(path)], check=True)


@contextmanager
def chromium(roots_pem: bytes) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    home = Path(tempfile.mkdtemp(prefix="meshca-chromium-"))
    _trust(home, roots_pem)
    profile = home / "profile"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1280,1000",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(str(CHROMEDRIVER), env={**os.environ, "HOME": str(home)})
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(home, ignore_errors=True)
