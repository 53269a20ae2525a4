"""The operators' console in real headless Chromium, against a real `meshca serve` over HTTPS.

The tests run in file order on one server: what the operator does early (rotate, revoke,
block, try a policy) is what the audit page must list, newest first, at the end. Each page's
screenshot is saved (see tests/console/browser.py for where)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from tests.console.browser import chromium, save_screenshot
from tests.support import AdminClient, MeshcaProcess, admin_token, csr_pem, start_meshca

TD = "spiffe://cluster.local"
PAGES = ("", "ca", "certificates", "identities", "policies", "audit", "issuance")
CONTROLS = "input, select, textarea, button, a[href], [tabindex]:not([tabindex='-1'])"


@dataclass
class Env:
    server: MeshcaProcess
    client: AdminClient
    base: str  # https://localhost:PORT
    tokens: dict[str, str]  # role -> token
    serials: list[str] = field(default_factory=list)

    def api(self, method: str, path: str, body: Any = None, role: str = "admin") -> Any:
        response = self.client.request(method, path, token=self.tokens[role], json_body=body)
        assert response.status < 300, (response.status, response.body)
        return response.json() if response.content_type.endswith("json") else response.body
# Every URL the page loaded: the document and each resource it fetched.
RESOURCES = ("return [...performance.getEntriesByType('navigation'), "
             "...performance.getEntriesByType('resource')].map(e => e.name)")


@pytest.fixture(scope="module")
def env(browser_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    server = start_meshca(tmp_path_factory.mktemp("console") / "data")
    try:
        client = AdminClient(server)
        port = server.admin_addr.rpartition(":")[2]
        env = Env(server, client, f"https://localhost:{port}", {"admin": admin_token(server)})
        for role in ("operator", "viewer"):
            env.tokens[role] = env.api("POST", "/v1/admin-tokens",
                                       {"name": f"console-{role}", "role": role})["token"]
        for account in ("web", "cart", "cart"):
            chain = server.create_certificate(csr_pem(), token=server.token("shop", account))
            leaf = x509.load_pem_x509_certificate(chain[0].encode())
            env.serials.append(f"{leaf.serial_number:x}")
        yield env
    finally:
        server.stop()


@pytest.fixture(scope="module")
def driver(env: Env) -> Iterator[Any]:
    with chromium(env.server.bundle_pem) as browser:
        yield browser


class Page:
    """One tab on the console, with the waits and lookups the tests share."""

    def __init__(self, driver: Any, env: Env) -> None:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait
        self.driver, self.env, self.by = driver, env, By
        # A table the page re-renders while a condition reads it: read it again.
        self.wait = WebDriverWait(driver, 15, ignored_exceptions=(StaleElementReferenceException,))

    def open(self, path: str) -> None:
        self.driver.get(f"{self.env.base}/ui/{path}")
        self.until(lambda: self.js("return document.readyState") == "complete")

    def sign_out(self) -> None:
        """Forget the tab's session from a same-origin page that runs no script, so no request
        of a console page is in flight while its token goes."""
        self.open("static/console.css")
        self.js("sessionStorage.clear()")

    def sign_in(self, role: str, page: str = "") -> None:
        self.sign_out()
        self.open(page)
        self.until(lambda: self.visible("#token"), "no sign-in form")
        self.type("#token", self.env.tokens[role])
        self.click("#signin-form button[type=submit]")
        self.until(lambda: self.visible("#content"))
        self.until(lambda: f"({role})" in self.text("#who"))

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def until(self, condition: Any, message: str = "") -> Any:
        return self.wait.until(lambda _: condition(), message)

    def find(self, selector: str) -> Any:
        return self.driver.find_element(self.by.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[Any]:
        return list(self.driver.find_elements(self.by.CSS_SELECTOR, selector))

    def exists(self, selector: str) -> bool:
        return bool(self.all(selector))

    def visible(self, selector: str) -> bool:
        found = self.all(selector)
        return bool(found) and bool(found[0].is_displayed())

    def text(self, selector: str) -> str:
        return str(self.find(selector).text)

    def type(self, selector: str, value: str) -> None:
        element = self.find(selector)
        element.clear()
        element.send_keys(value)

    def click(self, selector: str) -> None:
        self.find(selector).click()

    def select(self, selector: str, value: str) -> None:
        from selenium.webdriver.support.ui import Select
        Select(self.find(selector)).select_by_value(value)

    def confirm(self, expect: str) -> str:
        """Accept the confirmation dialog; returns its text, which must name `expect`."""
        self.until(lambda: self.visible("#confirm"), "no confirmation dialog")
        said = self.text("#confirm-text")
        assert expect in said, said
        self.click("#confirm-yes")
        self.until(lambda: not self.visible("#confirm"))
        return said

    def notice(self, other_than: str | None = None) -> str:
        """The notice shown, once it is not `other_than` (the one an earlier action left)."""
        self.until(lambda: self.visible("#notice") and self.text("#notice") != other_than,
                   "no (new) notice shown")
        return self.text("#notice")

    def shot(self, name: str) -> Path:
        return save_screenshot(self.driver, name)

    def csp_violations(self) -> list[str]:
        return [str(entry["message"]) for entry in self.driver.get_log("browser")
                if "Content Security Policy" in str(entry["message"])]

    def fetch(self, method: str, path: str, token: str, body: Any = None) -> int:
        """A request made from the page with fetch(), as a hand-crafted one would be."""
        return int(self.driver.execute_async_script(
            "const [method, path, token, body, done] = arguments;"
            "fetch(path, {method, headers: {Authorization: 'Bearer ' + token,"
            " 'Content-Type': 'application/json'}, body: body === null ? undefined :"
            " JSON.stringify(body)}).then(r => done(r.status), e => done(-1));",
            method, path, token, body))


@pytest.fixture
def page(driver: Any, env: Env) -> Page:
    return Page(driver, env)


def test_sign_in_with_a_wrong_token_is_a_readable_refusal_then_a_good_one_works(page: Page) -> None:
    page.sign_out()
    page.open("")
    assert page.visible("#signin") and not page.visible("#content")
    page.shot("01-sign-in")
    page.type("#token", "mca_not-a-real-token")
    page.click("#signin-form button[type=submit]")
    refusal = page.notice()
    assert refusal.startswith("Sign-in refused — Unauthorized:"), refusal
    assert "Traceback" not in refusal and "{" not in refusal
    page.sign_in("admin")
    assert page.text("#who") == "token:bootstrap-admin (admin)"
    page.until(lambda: "Signing intermediate" in page.text("#overview"))
    assert page.js("return sessionStorage.getItem('meshca.token')") == page.env.tokens["admin"]
    assert page.js("return document.cookie") == ""
    page.shot("02-overview")
    assert page.csp_violations() == []


def test_ca_page_draws_every_generation_on_a_timeline(page: Page) -> None:
    page.sign_in("viewer", "ca")
    generations = page.env.api("GET", "/v1/ca")["generations"]
    page.until(lambda: len(page.all("#ca-timeline svg rect.bar")) == len(generations))
    bars = {int(b.get_attribute("data-generation")) for b in page.all("#ca-timeline rect.bar")}
    assert bars == {g["id"] for g in generations}
    assert page.exists("#ca-timeline line.now")
    # Each short-lived generation shows its prepare and activate thresholds; a root's lie past
    # the axis, which ends soon after them, so the root's bar carries its end date instead.
    short = [g for g in generations if g["kind"] != "root"]
    marks = [m.text for m in page.all("#ca-timeline text.mark")]
    assert marks.count("P") == len(short) and marks.count("A") == len(short)
    root = next(g for g in generations if g["kind"] == "root")
    assert page.text("#ca-timeline text.on-bar") == "→ " + root["not_after"][:19].replace("T", " ") + "Z"
    assert page.exists("#ca-timeline rect.lead")  # the root's publish lead
    signing = next(g for g in generations if g["signing"])
    assert "signing" in page.find(f"rect.bar[data-generation='{signing['id']}']").get_attribute("class")
    summary = page.text("#ca-summary")
    assert "Bundle sequence" in summary and "Prepare at" in summary
    page.shot("03-ca-timeline")


def test_operator_rotates_an_intermediate_ahead_of_schedule(page: Page) -> None:
    before = {g["id"] for g in page.env.api("GET", "/v1/ca")["generations"]}
    page.sign_in("operator", "ca")
    page.until(lambda: page.exists("#ca-table tbody tr"))
    page.select("#ca-kind", "intermediate")
    page.click("#ca-prepare")
    page.confirm("signs nothing until it is activated")
    assert page.notice().startswith("Prepared: prepare intermediate #")
    generations = page.env.api("GET", "/v1/ca")["generations"]
    new = [g for g in generations if g["id"] not in before]
    assert [(g["kind"], g["state"]) for g in new] == [("intermediate", "prepared")]
    new_id = new[0]["id"]
    page.until(lambda: page.exists(f"#ca-table tr[data-generation='{new_id}'][data-state='prepared']"))
    page.until(lambda: page.exists(f"#ca-timeline rect.bar[data-generation='{new_id}']"))
    page.click("#ca-activate")
    page.confirm("starts signing now; the active one retires")
    page.until(lambda: page.exists(f"#ca-table tr[data-generation='{new_id}'][data-state='active']"))
    signing = [g["id"] for g in page.env.api("GET", "/v1/ca")["generations"]
               if g["signing"] and g["kind"] == "intermediate"]
    assert signing == [new_id]
    page.shot("04-ca-rotated")


def test_viewer_sees_no_mutation_control_and_a_forged_post_is_refused(page: Page) -> None:
    env = page.env
    page.sign_in("viewer", "ca")
    page.until(lambda: page.exists("#ca-table tbody tr"))
    assert not page.exists("#ca-prepare") and not page.exists("#ca-activate")
    assert [b.text for b in page.all("#ca-table button")] == []
    page.open("certificates")
    page.until(lambda: page.exists("#cert-table tbody tr[data-serial]"))
    page.click(f"#cert-table tr[data-serial='{env.serials[0]}'] button")
    page.until(lambda: page.visible("#cert-detail"))
    assert not page.exists("#cert-revoke")
    page.shot("05-viewer-certificate")
    page.open("identities")
    page.until(lambda: page.exists("#blocked-table tbody tr"))
    assert not page.exists("#block-form")
    # What a viewer's hand-made requests get: 403, and nothing changes.
    serial = env.serials[0]
    assert page.fetch("POST", f"/v1/certificates/{serial}:revoke", env.tokens["viewer"],
                      {"reason": "keyCompromise"}) == 403
    assert page.fetch("POST", "/v1/ca:prepare", env.tokens["viewer"], {"kind": "root"}) == 403
    assert page.fetch("POST", f"/v1/identities/{TD}%2Fns%2Fshop%2Fsa%2Fweb:block",
                      env.tokens["viewer"], {}) == 403
    assert env.api("GET", f"/v1/certificates/{serial}")["revoked_at"] is None
    assert env.api("GET", "/v1/identities:blocked") == []


def test_search_open_revoke_a_certificate_and_find_it_in_the_crl(page: Page) -> None:
    env = page.env
    page.sign_in("operator", "certificates")
    page.type("#q-sa", "cart")
    page.select("#q-status", "active")
    page.click("#cert-search button[type=submit]")
    page.until(lambda: len(page.all("#cert-table tbody tr[data-serial]")) == 2)
    listed = {r.get_attribute("data-serial") for r in page.all("#cert-table tbody tr[data-serial]")}
    assert listed == set(env.serials[1:])
    serial = env.serials[2]
    page.click(f"#cert-table tr[data-serial='{serial}'] button")
    page.until(lambda: serial in page.text("#cert-facts"))
    facts = page.text("#cert-facts")
    assert f"{TD}/ns/shop/sa/cart" in facts and "leaf → #" in facts and "root" in facts
    assert page.text("#cert-pem").startswith("-----BEGIN CERTIFICATE-----")
    assert page.find("#cert-download").get_attribute("href").startswith("blob:")
    assert serial not in page.text("#crl-table")
    page.select("#revoke-reason", "keyCompromise")
    page.click("#revoke-button")
    page.confirm("can no longer renew itself")
    page.until(lambda: page.exists(f"#crl-table tr[data-serial='{serial}']"))
    assert "keyCompromise" in page.text(f"#crl-table tr[data-serial='{serial}']")
    page.until(lambda: "(keyCompromise)" in page.text("#cert-facts"))
    assert not page.visible("#cert-revoke")  # nothing left to revoke
    page.shot("06-certificate-revoked")
    # The CRL the API serves for the certificate's issuer (retired by the rotation above),
    # parsed: the serial is in it.
    issuer = env.api("GET", f"/v1/certificates/{serial}")["issuer_generation_id"]
    crl = x509.load_pem_x509_crl(env.api("GET", f"/v1/crl?issuer={issuer}"))
    assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
    # Revoking again is a readable problem, not a crash.
    assert page.fetch("POST", f"/v1/certificates/{serial}:revoke", env.tokens["operator"],
                      {"reason": "superseded"}) == 409


def test_block_an_identity_and_it_gets_no_certificate(page: Page) -> None:
    env = page.env
    spiffe_id = f"{TD}/ns/shop/sa/web"
    page.sign_in("operator", "identities")
    page.type("#block-id", spiffe_id)
    page.type("#block-reason", "suspected leak")
    page.click("#block-form button[type=submit]")
    page.confirm("gets no new certificate")
    page.until(lambda: page.exists(f"#blocked-table tr[data-spiffe-id='{spiffe_id}']"))
    assert "suspected leak" in page.text("#blocked-table")
    blocked = page.notice()
    assert blocked == f"{spiffe_id} is blocked."
    page.shot("07-identity-blocked")
    assert [b["spiffe_id"] for b in env.api("GET", "/v1/identities:blocked")] == [spiffe_id]
    with pytest.raises(grpc.RpcError) as refused:
        env.server.create_certificate(csr_pem(), token=env.server.token("shop", "web"))
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    # A bad SPIFFE ID is shown as the API's problem, readably.
    page.type("#block-id", "spiffe://cluster.local/ns/../sa/x")
    page.click("#block-form button[type=submit]")
    page.confirm("gets no new certificate")
    refusal = page.notice(other_than=blocked)
    assert re.match(r"^(Bad Request|Unprocessable Content|Unprocessable Entity): ", refusal), refusal


def test_try_a_policy_and_see_the_decision_and_explain_trace(page: Page) -> None:
    page.sign_in("viewer", "policies")
    page.until(lambda: "Policy set version" in page.text("#pol-version"))
    policy = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
              "metadata": {"name": "no-cart", "namespace": "shop"},
              "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/cart"]}}]}]}}
    page.type("#try-policies", json.dumps([policy]))
    page.click("#try-form button[type=submit]")
    page.until(lambda: page.visible("#try-result"))
    facts = page.text("#try-facts")
    assert "DENY" in facts and "denied by DENY policy shop/no-cart rule 0" in facts
    rows = [r.text for r in page.all("#try-explain tbody tr")]
    assert len(rows) == 1 and rows[0].startswith("shop/no-cart DENY yes yes 0"), rows
    page.shot("08-policy-try")
    # Against the stored set (empty): allowed, nothing applies.
    page.type("#try-policies", "")
    page.find("#try-policies").clear()
    page.click("#try-form button[type=submit]")
    page.until(lambda: "the policies in force" in page.text("#try-facts"))
    assert "ALLOW" in page.text("#try-facts")
    # A bad request is the API's 422 with its field paths, shown as a sentence.
    page.type("#try-request", '{"protocol": "HTTP"}')
    page.click("#try-form button[type=submit]")
    message = page.notice()
    assert message.startswith("Unprocessable") and "body.source: required" in message, message


def test_audit_lists_the_actions_newest_first_and_filters(page: Page) -> None:
    page.sign_in("viewer", "audit")
    page.until(lambda: page.exists("#audit-table tbody tr[data-action]"))
    ids = [int(r.find_element(page.by.CSS_SELECTOR, "td").text)
           for r in page.all("#audit-table tbody tr[data-action]")]
    assert ids == sorted(ids, reverse=True) and len(ids) > 5
    actions = [r.get_attribute("data-action") for r in page.all("#audit-table tbody tr[data-action]")]
    mine = [a for a in actions if a in ("identity.block", "certificate.revoke", "ca.activate",
                                        "ca.prepare")]
    assert mine == ["identity.block", "certificate.revoke", "ca.activate", "ca.prepare"], actions
    page.shot("09-audit")
    page.type("#f-action", "revoke")
    page.type("#f-actor", "console-operator")
    page.click("#audit-filter button[type=submit]")
    page.until(lambda: {r.get_attribute("data-action")
                        for r in page.all("#audit-table tbody tr[data-action]")} == {"certificate.revoke"})
    assert page.env.serials[2] in page.text("#audit-table")


def test_issuance_page_charts_this_servers_own_counters(page: Page) -> None:
    page.sign_in("viewer", "issuance")
    page.until(lambda: "Certificates issued" in page.text("#iss-facts"))
    for _ in range(3):
        page.env.server.create_certificate(csr_pem(), token=page.env.server.token("shop", "api"))
    page.until(lambda: page.exists("#iss-chart polyline.series-ok"))
    page.until(lambda: "Certificates issued\n6" in page.text("#iss-facts"), "6 issued: 3 + 3")
    # The blocked identity's refusal shows up among the failures.
    page.until(lambda: "permission_denied" in page.text("#iss-failures"))
    page.shot("10-issuance")


def test_every_control_is_labelled_and_reachable_with_the_keyboard(page: Page) -> None:
    from selenium.webdriver.common.keys import Keys
    page.sign_in("admin")
    unlabelled: list[str] = []
    unreachable: list[str] = []
    for path in PAGES:
        page.open(path)
        page.until(lambda: page.visible("#content"))
        page.js("return new Promise(r => setTimeout(r, 500))")
        if path == "certificates":  # the details panel and its controls
            page.until(lambda: page.exists("#cert-table tbody tr[data-serial] button"))
            page.find("#cert-table tbody tr[data-serial] button").click()
            page.until(lambda: page.visible("#cert-detail"))
        controls = [c for c in page.all(CONTROLS) if c.is_displayed()]
        assert controls
        for control in controls:
            if not (control.accessible_name or "").strip():
                unlabelled.append(f"/ui/{path}: {control.get_attribute('outerHTML')[:120]}")
        # Tab from the top through the whole page; each visible control must take focus.
        page.js("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
        reached: set[str] = set()
        body = page.find("body")
        body.send_keys(Keys.TAB)
        for _ in range(len(controls) * 2 + 10):
            reached.add(page.js("const e = document.activeElement; "
                                "return e ? e.outerHTML.slice(0, 200) : ''"))
            page.driver.switch_to.active_element.send_keys(Keys.TAB)
        for control in controls:
            if control.get_attribute("outerHTML")[:200] not in reached:
                unreachable.append(f"/ui/{path}: {control.get_attribute('outerHTML')[:120]}")
        assert page.csp_violations() == [], path
    assert unlabelled == []
    assert unreachable == []



AXE = Path(__file__).parent / "vendor" / "axe-4.14.1.min.js"  # axe-core from npm, MPL-2.0


def test_axe_finds_no_accessibility_violation_on_any_page(page: Page) -> None:
    """axe-core's WCAG 2 A/AA rules on every page, signed in as an admin (every control
    shown), with a certificate's details open."""
    axe = AXE.read_text()
    page.sign_in("admin")
    found: dict[str, list[str]] = {}
    for path in PAGES:
        page.open(path)
        page.until(lambda: page.visible("#content"))
        page.js("return new Promise(r => setTimeout(r, 500))")
        if path == "certificates":
            page.until(lambda: page.exists("#cert-table tbody tr[data-serial] button"))
            page.find("#cert-table tbody tr[data-serial] button").click()
            page.until(lambda: page.visible("#cert-detail"))
        page.js(axe)  # run through the driver, as a tester's tool: not part of the page
        result = page.driver.execute_async_script(
            "const done = arguments[0];"
            "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa']}})"
            ".then(r => done({passes: r.passes.length, violations: r.violations.map(v => v.id + ': '"
            " + v.nodes.map(n => n.target.join(' ')).join(', '))}),"
            " e => done({passes: 0, violations: ['axe failed: ' + e]}));")
        assert result["passes"] > 10, result  # axe did run its rules here
        if result["violations"]:
            found[f"/ui/{path}"] = list(result["violations"])
    assert found == {}


def test_pages_forbid_framing_and_inline_script_and_no_token_leaks(page: Page) -> None:
    env = page.env
    for path in PAGES:
        response = env.client.get(f"/ui/{path}")
        assert response.status == 200 and response.content_type == "text/html"
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["x-frame-options"] == "DENY"
        # No inline script: every <script> has a src, no element has an on… handler attribute.
        assert not re.search(rb"<script(?![^>]*\bsrc=)[^>]*>", response.body)
        assert not re.search(rb"<[^>]*\son[a-z]+\s*=", response.body)
        assert re.search(rb'<script src="/ui/static/console.js"', response.body)
    # Every URL the browser fetched, over every test: no token in any of them.
    page.sign_in("operator", "certificates")
    urls = page.js(RESOURCES)
    assert urls and all(env.tokens[r] not in u for u in urls for r in env.tokens)
    log = env.server.log_text()
    assert all(token not in log for token in env.tokens.values())
    # The console's data routes are not public.
    assert env.client.get("/ui/api/whoami").status == 401
    assert env.client.get("/ui/api/crl").status == 401


def test_operator_taints_the_signing_intermediate_and_a_successor_signs(page: Page) -> None:
    env = page.env
    signing = next(g for g in env.api("GET", "/v1/ca")["generations"]
                   if g["signing"] and g["kind"] == "intermediate")
    page.sign_in("operator", "ca")
    row = f"#ca-table tr[data-generation='{signing['id']}']"
    page.until(lambda: page.exists(f"{row} button"))
    page.click(f"{row} button")
    page.until(lambda: page.visible("#confirm-reason"), "the taint dialog asks for a reason")
    page.type("#confirm-reason", "key copied to a laptop")
    page.confirm("every certificate it signed must renew")
    page.until(lambda: page.exists(f"{row}[data-state='tainted']"))
    generations = env.api("GET", "/v1/ca")["generations"]
    successor = next(g for g in generations if g["signing"] and g["kind"] == "intermediate")
    assert successor["id"] > signing["id"]
    page.until(lambda: page.exists(f"#ca-timeline rect.bar.state-tainted[data-generation='{signing['id']}']"))
    entry = env.api("GET", "/v1/audit?order=newest&action=taint&limit=1")["items"][0]
    assert entry["actor"] == "token:console-operator" and "key copied to a laptop" in (entry["detail"] or "")
    page.shot("13-ca-tainted")
