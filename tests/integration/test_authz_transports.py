"""The conformance cases give the same answers in process, through REST, the CLI and ext_authz."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.service.auth.v3 import external_auth_pb2_grpc
from fastapi import FastAPI
from fastapi.testclient import TestClient

from meshca.authz import MeshConfig, PolicySet, evaluate, parse_mesh, parse_policies, parse_request
from meshca.cli.authz import main as authz_cli
from meshca.service.policy_store import PolicyStore
from meshca.transport.ext_authz.server import AuthorizationServicer
from meshca.transport.rest import problems
from meshca.transport.rest.routes import authz
from tests.integration.authz_envoy import check_request
from tests.unit.authz.cases import Case, answered, expected, load_cases

CASES = load_cases()


class _NoStore:
    def all(self) -> tuple[int, list[Any]]:
        return 0, []

    def put(self, namespace: str, name: str, document: dict[str, Any], audit: Any) -> tuple[Any, bool]:
        raise AssertionError("this test stores no policies")

    def delete(self, namespace: str, name: str, audit: Any) -> int:
        raise AssertionError("this test stores no policies")


def rest_app(store: PolicyStore | None = None, stored: Any = None, admin: Any = None) -> FastAPI:
    app = FastAPI()
    app.router.routes.extend(authz.router.routes)
    problems.install(app)
    app.state.authz = authz.AuthzContext(store or PolicyStore(), stored or _NoStore(), MeshConfig())
    app.state.admin = admin
    return app


def in_process(case: Case) -> dict[str, Any]:
    request, mesh = parse_request(case.request)
    return evaluate(PolicySet.build(parse_policies(case.policies), mesh or MeshConfig()),
                    request).to_json()


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(rest_app()) as test_client:
        yield test_client


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rest_evaluate(case: Case, client: TestClient) -> None:
    response = client.post("/v1/authz:evaluate", json={"policies": case.policies,
                                                        "request": case.request})
    assert response.status_code == 200, response.text
    assert answered(response.json()) == expected(case) == answered(in_process(case))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_eval(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policies, request = tmp_path / "policies.yaml", tmp_path / "req.json"
    policies.write_text(yaml.safe_dump_all(case.policies))
    request.write_text(json.dumps(case.request))
    status = authz_cli(["authz", "eval", "-f", str(policies), "--request", str(request), "--json"])
    answer = json.loads(capsys.readouterr().out)
    assert answered(answer) == expected(case)
    assert status == (0 if case.expect["decision"] == "ALLOW" else 3)


@pytest.fixture(scope="module")
def ext_authz() -> Iterator[tuple[dict[bool, AuthorizationServicer], Any]]:
    """One server with two services: verbose (the details) on one port, terse on another."""
    servicers = {verbose: AuthorizationServicer(PolicyStore(), verbose=verbose)
                 for verbose in (True, False)}
    servers, stubs = [], {}
    for verbose, servicer in servicers.items():
        server = grpc.server(ThreadPoolExecutor(max_workers=4))
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        stubs[verbose] = external_auth_pb2_grpc.AuthorizationStub(
            grpc.insecure_channel(f"127.0.0.1:{port}"))
    yield servicers, stubs
    for server in servers:
        server.stop(None)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_ext_authz_check(case: Case, ext_authz: tuple[dict[bool, AuthorizationServicer], Any]) -> None:
    servicers, stubs = ext_authz
    mesh = parse_mesh(case.request["mesh"]) if "mesh" in case.request else MeshConfig()
    for servicer in servicers.values():
        servicer.store = PolicyStore(mesh)
        servicer.store.replace("api", parse_policies(case.policies))
    verbose = stubs[True].Check(check_request(case.request), timeout=10)
    terse = stubs[False].Check(check_request(case.request), timeout=10)
    policy, rule = case.expect["policy"], case.expect["rule"]
    reason = "policy" if policy else ("no-policy" if case.expect["decision"] == "ALLOW"
                                      else "no-allow-match")
    if case.expect["decision"] == "ALLOW":
        assert verbose.status.code == terse.status.code == 0
        assert verbose.HasField("ok_response") and terse.HasField("ok_response")
        header = verbose.ok_response.headers[0].header
        terse_header = terse.ok_response.headers[0].header
    else:
        assert verbose.status.code == terse.status.code == 7  # PERMISSION_DENIED
        assert verbose.denied_response.status.code == terse.denied_response.status.code == 403
        body = json.loads(verbose.denied_response.body)
        assert body["reason"] == reason
        assert answered({**body, "reason": body["detail"]}) == expected(case)
        # Terse (the default): the decision and a coarse code, no policy name or human reason.
        assert json.loads(terse.denied_response.body) == {"decision": "DENY", "reason": "policy"}
        assert terse.status.message == "policy"
        header = verbose.denied_response.headers[0].header
        terse_header = terse.denied_response.headers[0].header
    assert header.value == " ".join(str(v) for v in (case.expect["decision"], policy, rule)
                                    if v is not None)
    assert terse_header.key == header.key == "x-meshca-authz"
    assert terse_header.value == case.expect["decision"]


def test_rest_invalid_policy_is_422_with_field_path(client: TestClient) -> None:
    bad = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
           "metadata": {"name": "x", "namespace": "n"}, "spec": {"action": "DENY"}}
    response = client.post("/v1/authz:evaluate", json={"policies": [CASES[0].policies[0], bad],
                                                        "request": CASES[0].request})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert {"field": "body.policies[1].spec.rules",
            "message": response.json()["errors"][0]["message"]} in response.json()["errors"]


def test_rest_invalid_request_is_422_with_field_path(client: TestClient) -> None:
    request = {**CASES[0].request, "source": {"principal": None, "ip": "not-an-ip"}}
    response = client.post("/v1/authz:check", json=request)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["body.source.ip"]
    response = client.post("/v1/authz:evaluate", json={"policies": [], "request": {"protocol": "UDP"}})
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert {"body.request.protocol", "body.request.source", "body.request.destination"} <= fields


def test_rest_body_that_is_not_an_object_is_422(client: TestClient) -> None:
    response = client.post("/v1/authz:evaluate", json=[1, 2])
    assert response.status_code == 422
    response = client.post("/v1/authz:evaluate", json={"policies": "x", "request": {}})
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "body.policies", "message": "must be a list"}]


def test_cli_invalid_policy_file_exits_1_with_path(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.yaml").write_text("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                                     "metadata: {name: a, namespace: n}\nspec: {action: DENY}\n")
    (tmp_path / "r.json").write_text(json.dumps(CASES[0].request))
    status = authz_cli(["authz", "eval", "-f", str(tmp_path / "p.yaml"), "--request",
                        str(tmp_path / "r.json")])
    assert status == 1
    assert f"{tmp_path / 'p.yaml'}[0].spec.rules: DENY action without" in capsys.readouterr().err


def test_cli_explain_human_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = next(c for c in CASES if "exact means exact" in c.id)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "p.yaml").write_text(yaml.safe_dump_all(case.policies))
    (tmp_path / "r.json").write_text(json.dumps(case.request))
    status = authz_cli(["authz", "eval", "-f", str(tmp_path / "dir"), "--request",
                        str(tmp_path / "r.json"), "--explain"])
    out = capsys.readouterr().out
    assert status == 3
    assert out.startswith("DENY\nreason: no rule of the 1 ALLOW policy")
    assert "rule 0: first mismatch at rules[0].to[0].operation.paths" in out
