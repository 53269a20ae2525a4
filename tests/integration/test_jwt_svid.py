"""JWT-SVIDs from a real `meshca serve`: MintJWTSVID and GetBundles over gRPC, validated by
PyJWT with the keys of GET /v1/bundle alone; the jwt generations through /v1/ca and `meshca ca`;
taint; the key types."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from meshca.gen.meshca.v1 import svid_pb2, svid_pb2_grpc
from tests.fakes.kube_api import FakeKubeApi
from tests.jwt_validation import validate
from tests.support import AdminClient, MeshcaProcess, admin_token, start_meshca

TD = "cluster.local"
NS = "shop"
NODE_AGENT = ("kube-system", "ztunnel")
AUD = "https://queue.example"
Metadata = list[tuple[str, str]]


def spiffe(namespace: str, account: str) -> str:
    return f"spiffe://{TD}/ns/{namespace}/sa/{account}"


class Env:
    def __init__(self, kube: FakeKubeApi, server: MeshcaProcess) -> None:
        self.kube = kube
        self.server = server

    def token(self, account: str = "web", pod: str | None = None) -> str:
        return self.kube.mint(NS, account, pod=pod or f"{account}-1")

    def agent(self, node: str = "n1") -> str:
        return self.kube.mint(*NODE_AGENT, pod=f"ztunnel-{node}")

    def stub(self) -> svid_pb2_grpc.SvidServiceStub:
        return svid_pb2_grpc.SvidServiceStub(self.server.channel())

    def mint(self, token: str | None, audience: list[str] | None = None, *, ttl: int = 0,
             spiffe_id: str = "") -> svid_pb2.MintJWTSVIDResponse:
        request = svid_pb2.MintJWTSVIDRequest(
            audience=[AUD] if audience is None else audience, ttl_seconds=ttl, spiffe_id=spiffe_id)
        metadata = [("authorization", f"Bearer {token}")] if token else []
        response: svid_pb2.MintJWTSVIDResponse = self.stub().MintJWTSVID(
            request, metadata=metadata, timeout=30)
        return response

    def refused(self, token: str | None, audience: list[str] | None = None, *, ttl: int = 0,
                spiffe_id: str = "") -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            self.mint(token, audience, ttl=ttl, spiffe_id=spiffe_id)
        return caught.value

    def bundle(self) -> dict[str, Any]:
        return bundle_of(self.server)

    def admin(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        return api(self.server, method, path, body, expect)


def bundle_of(server: MeshcaProcess) -> dict[str, Any]:
    response = AdminClient(server).get("/v1/bundle")
    assert response.status == 200, response.body
    document: dict[str, Any] = response.json()
    return document


def api(server: MeshcaProcess, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    response = AdminClient(server).request(method, path, token=admin_token(server), json_body=body)
    assert response.status == expect, response.body
    return response.json()


def jwt_kids(bundle: dict[str, Any]) -> set[str]:
    return {k["kid"] for k in bundle["keys"] if k["use"] == "jwt-svid"}


def jwt_generations(server: MeshcaProcess) -> list[dict[str, Any]]:
    return [g for g in api(server, "GET", "/v1/ca")["generations"] if g["kind"] == "jwt"]


def code_of(error: grpc.RpcError) -> grpc.StatusCode:
    code: grpc.StatusCode = error.code()
    return code


def details_of(error: grpc.RpcError) -> str:
    return str(error.details() or "")


def segment(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("jwt-svid")
    with FakeKubeApi() as kube:
        for account in ("web", "db", "mallory"):
            kube.add_service_account(NS, account)
        kube.add_service_account(*NODE_AGENT)
        kube.add_pod(NODE_AGENT[0], "ztunnel-n1", service_account=NODE_AGENT[1], node="n1")
        kube.add_pod(NS, "web-1", service_account="web", node="n1")
        kube.add_pod(NS, "db-1", service_account="db", node="n2")
        kube.add_pod(NS, "mallory-1", service_account="mallory", node="n1")
        config = kube.kubeconfig(root / "kubeconfig")
        server = start_meshca(root / "data", "--kubeconfig", str(config), "--token-validation",
                              "jwks", "--trusted-node-account", "/".join(NODE_AGENT),
                              "--ca-reload-interval", "0.5s", "--jwt-max-ttl", "10m")
        try:
            yield Env(kube, server)
        finally:
            server.stop()


# ---- minting and validating -----------------------------------------------------------------

def test_a_workload_mints_for_itself_and_pyjwt_validates_with_the_bundle_alone(env: Env) -> None:
    before = time.time()
    minted = env.mint(env.token("web"), [AUD, "second"])
    assert minted.spiffe_id == spiffe(NS, "web")
    header = jwt.get_unverified_header(minted.token)
    assert header["alg"] == "ES256" and header["typ"] == "JWT" and header["kid"] in jwt_kids(env.bundle())
    claims = validate(minted.token, env.bundle(), AUD)
    assert claims["sub"] == spiffe(NS, "web")
    assert claims["aud"] == [AUD, "second"]
    assert claims["exp"] == minted.expires_at
    assert claims["exp"] - claims["iat"] == 300  # --jwt-default-ttl
    assert before - 2 <= claims["iat"] <= time.time() + 1
    assert validate(minted.token, env.bundle(), "second")["sub"] == spiffe(NS, "web")
    one = env.mint(env.token("web"), [AUD], ttl=60)
    claims = validate(one.token, env.bundle(), AUD)
    assert claims["aud"] == AUD and claims["exp"] - claims["iat"] == 60


def test_the_bundle_carries_jwt_keys_but_pem_stays_roots_only(env: Env) -> None:
    bundle = env.bundle()
    uses = [k["use"] for k in bundle["keys"]]
    assert uses.count("x509-svid") >= 1 and uses.count("jwt-svid") >= 1
    for key in bundle["keys"]:
        if key["use"] == "jwt-svid":
            assert key["kty"] == "EC" and key["crv"] == "P-256" and "x5c" not in key
    pem = AdminClient(env.server).get("/v1/bundle", accept="application/x-pem-file").body
    assert pem.count(b"BEGIN CERTIFICATE") == uses.count("x509-svid")
    assert b"PUBLIC KEY" not in pem


def test_get_bundles_returns_the_same_document(env: Env) -> None:
    response = env.stub().GetBundles(svid_pb2.GetBundlesRequest(), timeout=30, metadata=[
        ("authorization", f"Bearer {env.token('db', 'db-1')}")])
    assert json.loads(response.bundle) == env.bundle()
    assert dict(response.federated_bundles) == {}
    with pytest.raises(grpc.RpcError) as caught:
        env.stub().GetBundles(svid_pb2.GetBundlesRequest(), timeout=30)
    assert code_of(caught.value) is grpc.StatusCode.UNAUTHENTICATED


def test_a_node_agent_mints_for_a_workload_on_its_node(env: Env) -> None:
    minted = env.mint(env.agent(), spiffe_id=spiffe(NS, "web"))
    assert validate(minted.token, env.bundle(), AUD)["sub"] == spiffe(NS, "web")
    # shop/db runs on n2 only: the agent of n1 may not speak for it (the same status as
    # CreateCertificate's impersonation refusal).
    error = env.refused(env.agent(), spiffe_id=spiffe(NS, "db"))
    assert code_of(error) is grpc.StatusCode.UNAUTHENTICATED, details_of(error)
    assert "no pod of that identity" in details_of(error)


def test_a_workload_may_not_name_another_identity(env: Env) -> None:
    error = env.refused(env.token("mallory"), spiffe_id=spiffe(NS, "web"))
    assert code_of(error) in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
    assert "ImpersonatedIdentity" in details_of(error)
    foreign = env.refused(env.agent(), spiffe_id="spiffe://evil.example/ns/shop/sa/web")
    assert code_of(foreign) is grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(("audience", "ttl", "words"), [
    ([], 0, "at least one audience"),
    ([""], 0, "must not be empty"),
    ([AUD, " "], 0, "must not be empty"),
    (["x" * 513], 0, "at most 512"),
    ([f"a{i}" for i in range(17)], 0, "at most 16"),
    ([AUD], 601, "exceeds the longest JWT-SVID"),
    ([AUD], -1, "must not be negative"),
])
def test_bad_requests_are_invalid_argument(env: Env, audience: list[str], ttl: int,
                                           words: str) -> None:
    error = env.refused(env.token("web"), audience, ttl=ttl)
    assert code_of(error) is grpc.StatusCode.INVALID_ARGUMENT
    assert words in details_of(error)


def test_no_token_and_a_bad_token_are_unauthenticated(env: Env) -> None:
    assert code_of(env.refused(None)) is grpc.StatusCode.UNAUTHENTICATED
    assert code_of(env.refused("not.a.token")) is grpc.StatusCode.UNAUTHENTICATED


def test_a_blocked_identity_is_refused(env: Env) -> None:
    who = spiffe(NS, "db")
    env.admin("POST", f"/v1/identities/{quote(who, safe='')}:block", {"reason": "test"})
    try:
        error = env.refused(env.token("db", "db-1"))
        assert code_of(error) is grpc.StatusCode.PERMISSION_DENIED
        assert "blocked" in details_of(error)
    finally:
        env.admin("POST", f"/v1/identities/{quote(who, safe='')}:unblock")
    assert env.mint(env.token("db", "db-1")).spiffe_id == who


def test_tokens_that_must_not_validate(env: Env) -> None:
    bundle = env.bundle()
    good = env.mint(env.token("web")).token
    head, body, _ = good.split(".")
    kid = jwt.get_unverified_header(good)["kid"]
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))

    unsigned = f"{segment({'alg': 'none', 'kid': kid, 'typ': 'JWT'})}.{body}."
    with pytest.raises(jwt.InvalidTokenError):
        validate(unsigned, bundle, AUD)
    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": "not-a-meshca-kid"})
    with pytest.raises(jwt.InvalidTokenError, match="no jwt-svid key"):
        validate(forged, bundle, AUD)
    same_kid = jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": kid})
    with pytest.raises(jwt.InvalidSignatureError):
        validate(same_kid, bundle, AUD)
    with pytest.raises(jwt.InvalidAudienceError):
        validate(good, bundle, "https://other.example")
    tampered = f"{head}.{segment({**claims, 'sub': spiffe(NS, 'db')})}.{good.split('.')[2]}"
    with pytest.raises(jwt.InvalidSignatureError):
        validate(tampered, bundle, AUD)
    short = env.mint(env.token("web"), ttl=1).token
    time.sleep(2.2)
    with pytest.raises(jwt.ExpiredSignatureError):
        validate(short, env.bundle(), AUD)


def test_mints_are_counted(env: Env) -> None:
    env.mint(env.token("web"))
    text = subprocess.run([sys.executable, "-c", f"import urllib.request;print(urllib.request."
                           f"urlopen('http://{env.server.metrics_addr}/metrics').read().decode())"],
                          capture_output=True, text=True, timeout=30, check=True).stdout
    minted = [line for line in text.splitlines() if line.startswith("meshca_jwt_svids_minted_total")]
    assert minted and float(minted[0].split()[-1]) >= 1
    assert 'meshca_jwt_svid_errors_total{error="invalid_argument"}' in text


# ---- operators ----------------------------------------------------------------------------

def meshca_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshca", *args], capture_output=True, text=True,
                          timeout=60)


def test_ca_status_and_the_ca_command_show_and_drive_jwt_keys(env: Env) -> None:
    server = env.server
    data = ["--data-dir", str(server.data_dir)]
    (active,) = [g for g in jwt_generations(server) if g["state"] == "active"]
    assert active["in_bundle"] and not active["signing"] and active["key_type"] == "ec-p256"
    assert active["serial"] in jwt_kids(env.bundle())  # the kid
    table = meshca_cli("ca", "status", *data)
    assert table.returncode == 0, table.stderr
    assert "jwt" in table.stdout and "JWT-SVID key" in table.stdout

    sequence = env.bundle()["spiffe_sequence"]
    prepared = meshca_cli("ca", "prepare", "jwt", "--json", *data)
    assert prepared.returncode == 0, prepared.stderr
    new_id = json.loads(prepared.stdout)["actions"][0]["generation_id"]
    new = next(g for g in jwt_generations(server) if g["id"] == new_id)
    assert new["state"] == "prepared" and new["in_bundle"]

    def published() -> bool:
        bundle = env.bundle()
        return new["serial"] in jwt_kids(bundle) and bundle["spiffe_sequence"] > sequence
    eventually(published, "the prepared JWT key in the bundle with a new sequence")

    early = meshca_cli("ca", "activate", "jwt", *data)  # the publish lead is a day
    assert early.returncode == 1 and "409" in early.stderr and "published only from" in early.stderr
    old_token = env.mint(env.token("web")).token
    activated = meshca_cli("ca", "activate", "jwt", "--waive-publish-lead", *data)
    assert activated.returncode == 0, activated.stderr
    assert f"activate jwt generation {new_id}" in activated.stdout

    def signs_with_new_key() -> bool:
        token = env.mint(env.token("web")).token
        return bool(jwt.get_unverified_header(token)["kid"] == new["serial"])
    eventually(signs_with_new_key, "the activated JWT key signing")
    states = {g["id"]: g["state"] for g in jwt_generations(server)}
    assert states[active["id"]] == "retired" and states[new_id] == "active"
    # The retired key stays published: what it signed still validates.
    assert validate(old_token, env.bundle(), AUD)["sub"] == spiffe(NS, "web")
    audit = api(server, "GET", "/v1/audit?limit=1000")
    assert any(e["action"] == "ca.activate" and e["target"] == "jwt" and e["outcome"] == "ok"
               for e in audit["items"])


def test_taint_removes_the_key_from_the_bundle_and_replaces_it(env: Env) -> None:
    (active,) = [g for g in jwt_generations(env.server) if g["state"] == "active"]
    token = env.mint(env.token("web")).token
    assert jwt.get_unverified_header(token)["kid"] == active["serial"]
    change = env.admin("POST", f"/v1/ca/generations/{active['id']}:taint", {"reason": "leaked"})
    assert any(a["action"] == "activate" and a["kind"] == "jwt" for a in change["actions"])
    eventually(lambda: active["serial"] not in jwt_kids(env.bundle()), "the tainted key unpublished")
    with pytest.raises(jwt.InvalidTokenError, match="no jwt-svid key"):
        validate(token, env.bundle(), AUD)

    def fresh_key_signs() -> bool:
        fresh = env.mint(env.token("web")).token
        return bool(jwt.get_unverified_header(fresh)["kid"] != active["serial"]
                    and validate(fresh, env.bundle(), AUD)["sub"] == spiffe(NS, "web"))
    eventually(fresh_key_signs, "a replacement JWT key signing")
    states = {g["id"]: g["state"] for g in jwt_generations(env.server)}
    assert states[active["id"]] == "tainted"


def eventually(check: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


# ---- key types ------------------------------------------------------------------------------

@pytest.mark.parametrize(("key_type", "kty", "alg"), [("RS256", "RSA", "RS256"),
                                                       ("ES384", "EC", "ES384")])
def test_other_key_types(tmp_path: Path, key_type: str, kty: str, alg: str) -> None:
    server = start_meshca(tmp_path / "data", "--jwt-key-type", key_type)
    try:
        stub = svid_pb2_grpc.SvidServiceStub(server.channel())
        minted = stub.MintJWTSVID(svid_pb2.MintJWTSVIDRequest(audience=[AUD]), timeout=30,
                                  metadata=[("authorization", f"Bearer {server.token()}")])
        bundle = bundle_of(server)
        keys = [k for k in bundle["keys"] if k["use"] == "jwt-svid"]
        assert [k["kty"] for k in keys] == [kty]
        assert jwt.get_unverified_header(minted.token)["alg"] == alg
        assert validate(minted.token, bundle, AUD)["sub"] == minted.spiffe_id
    finally:
        server.stop()

