"""Policies as operators write them: YAML bodies (one or several documents) over raw HTTP, and
`meshca admin policies apply | list | get | diff | delete` against a real server."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
import yaml

from tests.cli.clitools import meshca, ok
from tests.support import MeshcaProcess, admin_token, start_meshca

ONE = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-admin
  namespace: shop
spec:
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/admin"]
"""

SEVERAL = """\
# two policies, as `kubectl apply -f` would take them
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-web
  namespace: shop
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/shop/sa/web"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-metrics
spec:
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/metrics"]
---
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshcaProcess]:
    process = start_meshca(tmp_path_factory.mktemp("policies") / "data")
    yield process
    process.stop()


@pytest.fixture
def http(server: MeshcaProcess) -> Iterator[httpx2.Client]:
    context = ssl.create_default_context(cadata=server.bundle_pem.decode())
    with httpx2.Client(base_url=f"https://localhost:{server.admin_addr.rpartition(':')[2]}",
                       verify=context, timeout=30,
                       headers={"Authorization": f"Bearer {admin_token(server)}"}) as client:
        yield client


def _stored(http: httpx2.Client) -> dict[str, dict[str, object]]:
    listed = http.get("/v1/authz/policies").json()["policies"]
    return {f"{p['namespace']}/{p['name']}": p["document"] for p in listed}


# ---- raw HTTP -------------------------------------------------------------------------------

def test_put_with_a_yaml_body_stores_the_policy(http: httpx2.Client) -> None:
    response = http.put("/v1/authz/policies/shop/deny-admin", content=ONE,
                        headers={"Content-Type": "application/yaml"})
    assert response.status_code in (200, 201), response.text
    assert _stored(http)["shop/deny-admin"]["spec"] == yaml.safe_load(ONE)["spec"]
    # JSON keeps working, and `application/x-yaml` is YAML too.
    again = http.put("/v1/authz/policies/shop/deny-admin", json=yaml.safe_load(ONE))
    assert again.status_code == 200, again.text
    x_yaml = http.put("/v1/authz/policies/shop/deny-admin", content=ONE,
                      headers={"Content-Type": "application/x-yaml; charset=utf-8"})
    assert x_yaml.status_code == 200, x_yaml.text


def test_post_applies_every_document_of_a_multi_document_yaml_body(http: httpx2.Client) -> None:
    response = http.post("/v1/authz/policies", params={"namespace": "shop"}, content=SEVERAL,
                         headers={"Content-Type": "application/yaml"})
    assert response.status_code == 200, response.text
    applied = [(a["namespace"], a["name"]) for a in response.json()["applied"]]
    assert applied == [("shop", "allow-web"), ("shop", "deny-metrics")]
    stored = _stored(http)
    assert stored["shop/deny-metrics"]["spec"]["action"] == "DENY"  # type: ignore[index]
    assert stored["shop/allow-web"]["spec"]["action"] == "ALLOW"  # type: ignore[index]


def test_one_bad_document_stores_none_and_names_where_it_is(http: httpx2.Client) -> None:
    bad = SEVERAL.replace("name: deny-metrics", "name: deny-metrics-2\n  namespace: shop").replace(
        "name: allow-web", "name: allow-web-2").replace("action: DENY", "action: MAYBE")
    response = http.post("/v1/authz/policies", content=bad, headers={"Content-Type": "application/yaml"})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    fields = [e["field"] for e in response.json()["errors"]]
    assert fields == ["body[1].spec.action"], fields
    assert "shop/allow-web-2" not in _stored(http)


@pytest.mark.parametrize(("content_type", "body", "status", "words"), [
    ("application/yaml", "a: [unclosed", 400, "not YAML"),
    ("application/json", "{not json", 400, "not JSON"),
    ("text/plain", ONE, 415, "application/yaml"),
    ("application/yaml", "---\n---\n", 400, "no document"),
])
def test_bodies_that_cannot_be_read_are_refused_with_a_reason(
        http: httpx2.Client, content_type: str, body: str, status: int, words: str) -> None:
    response = http.post("/v1/authz/policies", content=body, headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_put_takes_one_document(http: httpx2.Client) -> None:
    response = http.put("/v1/authz/policies/shop/allow-web", content=SEVERAL,
                        headers={"Content-Type": "application/yaml"})
    assert response.status_code == 400
    assert "POST /v1/authz/policies" in response.json()["detail"]


# ---- the CLI --------------------------------------------------------------------------------

def test_cli_apply_list_get_diff_delete(server: MeshcaProcess, tmp_path: Path) -> None:
    data = ["--data-dir", str(server.data_dir)]
    manifest = tmp_path / "policies.yaml"
    manifest.write_text(SEVERAL.replace("allow-web", "cli-allow").replace("deny-metrics", "cli-deny"))

    refused = meshca("admin", "policies", "apply", "-f", str(manifest), *data, cwd=tmp_path)
    assert refused.rc == 1 and "metadata.namespace" in refused.stderr  # the 2nd names none
    applied = ok(meshca("admin", *data, "policies", "apply", "-f", str(manifest), "-n", "shop",
                        cwd=tmp_path))
    assert applied.stdout.splitlines() == ["authorizationpolicy shop/cli-allow created",
                                           "authorizationpolicy shop/cli-deny created"]
    again = ok(meshca("admin", "policies", "apply", "-f", str(manifest), "-n", "shop", *data,
                      cwd=tmp_path))
    assert "authorizationpolicy shop/cli-deny configured" in again.stdout

    listing = ok(meshca("admin", "policies", "list", "-n", "shop", *data, cwd=tmp_path)).stdout
    assert "cli-allow" in listing and "cli-deny" in listing and "DENY" in listing
    got = ok(meshca("admin", "policies", "get", "shop/cli-deny", *data, cwd=tmp_path)).stdout
    assert yaml.safe_load(got)["spec"]["rules"][0]["to"][0]["operation"]["paths"] == ["/metrics"]

    same = meshca("admin", "policies", "diff", "-f", str(manifest), "-n", "shop", *data, cwd=tmp_path)
    assert (same.rc, same.stdout) == (0, "")
    manifest.write_text(manifest.read_text().replace('"/metrics"', '"/debug"'))
    changed = meshca("admin", "policies", "diff", "-f", str(manifest), "-n", "shop", *data,
                     cwd=tmp_path)
    assert changed.rc == 1
    lines = changed.stdout.splitlines()
    changes = [line for line in lines if line[:1] in "+-" and not line.startswith(("---", "+++"))]
    assert [line[0] + line.split()[-1] for line in changes] == ["-/metrics", "+/debug"]
    assert "stored/shop/cli-deny" in changed.stdout

    from_stdin = ok(meshca("admin", "policies", "apply", "-f", "-", "-n", "shop", *data,
                           cwd=tmp_path, stdin=manifest.read_text()))
    assert "shop/cli-deny configured" in from_stdin.stdout
    assert ok(meshca("admin", "policies", "diff", "-f", str(manifest), "-n", "shop", *data,
                     cwd=tmp_path)).stdout == ""

    ok(meshca("admin", "policies", "delete", "shop/cli-deny", *data, cwd=tmp_path))
    gone = meshca("admin", "policies", "get", "shop/cli-deny", *data, cwd=tmp_path)
    assert gone.rc == 1 and "404" in gone.stderr
    unreachable = meshca("admin", "policies", "diff", "-f", str(manifest), "-n", "shop",
                         "--server", "https://127.0.0.1:1", "--token-file",
                         str(server.data_dir / "admin-token"), "--ca-file",
                         str(server.data_dir / "root-cert.pem"), cwd=tmp_path)
    assert unreachable.rc == 2 and "is `meshca serve` running?" in unreachable.stderr
