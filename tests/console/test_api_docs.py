"""The admin API's own documentation page (/docs) in real headless Chromium: it loads with no
token and no network beyond the server (vendored, pinned Swagger UI), under the same strict
Content-Security-Policy as the console, and its Authorize box works for "Try it out"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest

from tests.console.browser import chromium, save_screenshot
from tests.support import AdminClient, MeshcaProcess, admin_token, start_meshca

SWAGGER_UI_VERSION = "5.35.0"  # the vendored swagger-ui-dist; see docs/console.md to update it
# Every URL the page loaded: the document and each resource it fetched.
RESOURCES = ("return [...performance.getEntriesByType('navigation'), "
             "...performance.getEntriesByType('resource')].map(e => e.name)")


@pytest.fixture(scope="module")
def server(browser_available: None, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[MeshcaProcess]:
    server = start_meshca(tmp_path_factory.mktemp("docs") / "data")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def driver(server: MeshcaProcess) -> Iterator[Any]:
    with chromium(server.bundle_pem) as browser:
        yield browser


def test_openapi_and_docs_are_readable_without_a_token(server: MeshcaProcess) -> None:
    client = AdminClient(server)
    spec = client.get("/openapi.json")
    assert spec.status == 200 and spec.json()["info"]["title"] == "meshca admin API"
    page = client.get("/docs")
    assert page.status == 200 and page.content_type == "text/html"
    assert b"/ui/static/swagger-ui-bundle.js" in page.body and b"cdn" not in page.body.lower()
    # What the page loads is served here, pinned.
    bundle = client.get("/ui/static/swagger-ui-bundle.js")
    assert bundle.status == 200 and bundle.content_type == "text/javascript"
    vendored = resources.files("meshca.transport.rest.ui") / "static" / "swagger-ui-bundle.js"
    assert bundle.body == vendored.read_bytes()
    assert f'"{SWAGGER_UI_VERSION}"'.encode() in bundle.body or SWAGGER_UI_VERSION.encode() in bundle.body


def test_docs_render_offline_and_try_it_out_works_with_the_authorize_box(
        driver: Any, server: MeshcaProcess) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = server.admin_addr.rpartition(":")[2]
    origin = f"https://localhost:{port}"
    wait = WebDriverWait(driver, 20)
    driver.get(f"{origin}/docs")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) > 20)
    assert "meshca admin API" in driver.find_element(By.CSS_SELECTOR, ".info .title").text
    urls = driver.execute_script(RESOURCES)
    assert urls and all(u.startswith(origin) for u in urls), urls  # nothing from elsewhere
    violations = [e["message"] for e in driver.get_log("browser")
                  if "Content Security Policy" in e["message"]]
    assert violations == []
    save_screenshot(driver, "11-api-docs")

    # Authorize with the bearer token, then run GET /v1/ca from the page.
    driver.find_element(By.CSS_SELECTOR, "button.authorize").click()
    field = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".auth-container input"))
    field.send_keys(admin_token(server))
    driver.find_element(By.CSS_SELECTOR, ".auth-container button.authorize").click()
    driver.find_element(By.CSS_SELECTOR, ".modal-ux button.btn-done").click()
    operation = driver.find_element(By.CSS_SELECTOR, "#operations-ca-ca_status_v1_ca_get")
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    wait.until(lambda d: operation.find_elements(By.CSS_SELECTOR, ".try-out__btn"))[0].click()
    wait.until(lambda d: operation.find_elements(By.CSS_SELECTOR, ".execute"))[0].click()
    status = wait.until(lambda d: operation.find_elements(
        By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status"))[0]
    assert status.text.strip().startswith("200"), status.text
    body = operation.find_element(By.CSS_SELECTOR,
                                  ".live-responses-table tbody .response-col_description pre").text
    assert json.loads(body)["mode"] == "meshca"
    save_screenshot(driver, "12-api-docs-try-it-out")
