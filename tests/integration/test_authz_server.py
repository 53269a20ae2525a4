"""Authorization on the real server: policies from --policy-dir and from the admin API,
enforced by every worker's ext_authz (Envoy's gRPC Check) and answered the same by REST."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import pytest
import yaml
from envoy.service.auth.v3 import external_auth_pb2_grpc

from tests.integration.authz_envoy import check_request
from tests.integration.test_ca_rotation import api, eventually
from tests.support import AdminClient, MeshcaProcess, start_meshca

TD = "spiffe://cluster.local"
WEB = f"{TD}/ns/shop/sa/web"
LOADED = re.compile(r"loaded \d+ authorization policies from ")


def request(path: str, principal: str = WEB) -> dict[str, Any]:
    return {"protocol": "HTTP", "source": {"principal": principal, "ip": "10.0.0.7"},
            "destination": {"namespace": "shop", "labels": {"app": "cart"}, "port": 8080},
            "http": {"method": "GET", "path": path, "host": "cart.shop", "headers": {}}}


def deny_path(name: str, path: str) -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": [path]}}]}]}}


@pytest.fixture
def server(tmp_path: Path) -> Any:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "admin.yaml").write_text(yaml.safe_dump(deny_path("no-admin", "/admin/*")))
    process = start_meshca(tmp_path / "data", "--workers", "2", "--ca-reload-interval", "0.5s",
                           "--policy-dir", str(policies))
    yield process, policies
    process.stop()


def checks(server: MeshcaProcess, body: dict[str, Any], count: int = 12) -> set[int]:
    """Status codes of `count` Checks, each on a new connection (so both workers answer)."""
    addr = json.loads((server.data_dir / "endpoints.json").read_text())["ext_authz"]
    codes = set()
    for _ in range(count):
        with grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            response = external_auth_pb2_grpc.AuthorizationStub(channel).Check(
                check_request(body), timeout=10)
            codes.add(response.status.code)
            if response.status.code:
                assert response.denied_response.status.code == 403
    return codes


def test_policies_from_the_dir_and_the_api_are_enforced_by_every_worker(server: Any) -> None:
    process, _ = server
    assert checks(process, request("/admin/users")) == {7}  # PERMISSION_DENIED, from the dir
    assert checks(process, request("/cart")) == {0}

    put = AdminClient(process).request("PUT", "/v1/authz/policies/shop/no-cart",
                                       token=(process.data_dir / "admin-token").read_text().strip(),
                                       json_body=deny_path("no-cart", "/cart"))
    assert put.status == 201, put.body
    eventually(lambda: checks(process, request("/cart")) == {7}, what="every worker denying /cart")
    answer = api(process, "POST", "/v1/authz:check", request("/cart"))
    assert answer["decision"] == "DENY" and answer["policy"] == "shop/no-cart"

    deleted = AdminClient(process).request("DELETE", "/v1/authz/policies/shop/no-cart",
                                           token=(process.data_dir / "admin-token").read_text().strip())
    assert deleted.status == 200
    eventually(lambda: checks(process, request("/cart")) == {0}, what="every worker allowing again")
    audit = [e["action"] for e in api(process, "GET", "/v1/audit?limit=1000")["items"]]
    assert audit.count("authz.policy.put") == 1 and audit.count("authz.policy.delete") == 1


def test_a_changed_policy_file_is_reloaded_and_a_broken_one_keeps_the_last_set(server: Any) -> None:
    process, policies = server
    (policies / "admin.yaml").write_text(yaml.safe_dump(deny_path("no-admin", "/cart")))
    eventually(lambda: checks(process, request("/cart")) == {7}, what="the edited file enforced")
    assert checks(process, request("/admin/users")) == {0}
    # Every watcher of the dir has loaded it twice by now (at start and after the edit).
    watchers = len(LOADED.findall(process.log_text())) // 2
    assert watchers >= 2, process.log_text()  # at least one per worker
    (policies / "admin.yaml").write_text("spec: {action: DENY, rules: [{to: [{operation: {paths: 5}}]}]}")
    eventually(lambda: process.log_text().count("not reloaded") >= watchers,
               what="every watcher refusing the broken file")
    assert checks(process, request("/cart")) == {7}  # the last good set stays
    assert "not reloaded" in process.log_text()


def test_a_blocked_source_identity_is_denied_at_ext_authz(server: Any) -> None:
    process, _ = server
    assert checks(process, request("/cart")) == {0}
    api(process, "POST", f"/v1/identities/{quote(WEB, safe='')}:block", {"reason": "incident"})
    eventually(lambda: checks(process, request("/cart")) == {7}, what="the blocked caller denied")
    assert checks(process, request("/cart", f"{TD}/ns/shop/sa/other")) == {0}


def test_the_cli_gives_the_same_answer_as_the_server(server: Any, tmp_path: Path) -> None:
    process, policies = server
    req = tmp_path / "req.json"
    req.write_text(json.dumps(request("/admin/x")))
    ran = subprocess.run([sys.executable, "-m", "meshca", "authz", "eval", "-f",
                          str(policies / "admin.yaml"), "--request", str(req), "--json"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 3, ran.stderr
    assert json.loads(ran.stdout)["policy"] == "shop/no-admin"
    served = api(process, "POST", "/v1/authz:check", request("/admin/x"))
    assert served["decision"] == "DENY" and served["policy"] == "shop/no-admin"


def test_policies_watched_in_kubernetes_are_enforced_and_withdrawn(tmp_path: Path) -> None:
    from tests.fakes.kube_api import FakeKubeApi

    with FakeKubeApi() as kube:
        kube.add_namespace("shop")
        process = start_meshca(tmp_path / "data", "--workers", "2", "--watch-kube-policies",
                               "--kubeconfig", str(kube.kubeconfig(tmp_path / "kubeconfig")))
        try:
            assert checks(process, request("/cart")) == {0}
            kube.put_authorization_policy("shop", "no-cart", deny_path("no-cart", "/cart")["spec"])
            eventually(lambda: checks(process, request("/cart")) == {7},
                       what="the watched policy enforced by every worker")
            listed = api(process, "GET", "/v1/authz/policies")["policies"]
            assert [(p["name"], p["source"]) for p in listed] == [("no-cart", "kube")]
            kube.delete_authorization_policy("shop", "no-cart")
            eventually(lambda: checks(process, request("/cart")) == {0}, what="withdrawn")
        finally:
            process.stop()
