"""Proves FakeKubeApi through the real `kubernetes` client (v37, openapi-generator/urllib3).

Clients here are built the way meshca's adapter should build them: a fresh Configuration
with `retries` set BEFORE the ApiClient exists (the urllib3 pool is created in
ApiClient.__init__), then `new_client_from_config(..., client_configuration=cfg)`.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import urllib3
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from meshca.core import jwks as meshca_jwks
from meshca.core import jwt as meshca_jwt
from tests.fakes.kube_api import LEGACY_ISSUER, FakeKubeApi

NS = "shop"
SA = "cart"
POD = "cart-7d9f"
NODE = "node-a"
REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


def _claims(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _header(token: str) -> dict[str, Any]:
    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _api_client(kube: FakeKubeApi, tmp_path: Path, *, retries: Any = 0) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.retries = retries  # must be set before ApiClient() builds its urllib3 PoolManager
    path = kube.kubeconfig(tmp_path / f"kubeconfig-{time.monotonic_ns()}")
    return config.new_client_from_config(config_file=str(path), client_configuration=cfg)


@pytest.fixture
def kube() -> Iterator[FakeKubeApi]:
    with FakeKubeApi() as fake:
        fake.add_service_account(NS, SA)
        fake.add_pod(NS, POD, service_account=SA, node=NODE)
        yield fake


@pytest.fixture
def api(kube: FakeKubeApi, tmp_path: Path) -> Iterator[client.ApiClient]:
    api_client = _api_client(kube, tmp_path)
    yield api_client
    api_client.close()


def _review(api: client.ApiClient, token: str, audiences: Sequence[str] | None = ("istio-ca",)) -> Any:
    spec = client.V1TokenReviewSpec(token=token, audiences=list(audiences) if audiences is not None else None)
    return client.AuthenticationV1Api(api).create_token_review(client.V1TokenReview(spec=spec))


def _raw(
    api: client.ApiClient, method: str, path: str, *, body: Any = None, auth: bool = True,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    m, url, header_params, body, post_params = api.param_serialize(
        method, path, header_params=dict(headers or {}), body=body,
        auth_settings=["BearerToken"] if auth else [],
    )
    resp = api.call_api(m, url, header_params=header_params, body=body, post_params=post_params)
    resp.read()
    return resp.status, dict(resp.getheaders()), resp.data


# --------------------------------------------------------------------------- tokens


def test_projected_token_has_kubernetes_shape(kube: FakeKubeApi) -> None:
    now = 1_800_000_000
    token = kube.mint(NS, SA, pod=POD, now=now, ttl=600)
    header, claims = _header(token), _claims(token)
    assert header == {"alg": "ES256", "kid": kube.current_kid}
    assert claims["iss"] == kube.issuer == kube.url
    assert claims["sub"] == f"system:serviceaccount:{NS}:{SA}"
    assert claims["aud"] == ["istio-ca"]
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (now, now, now + 600)
    assert isinstance(claims["jti"], str) and claims["jti"]
    assert claims["kubernetes.io"] == {
        "namespace": NS,
        "serviceaccount": {"name": SA, "uid": kube.service_account_uid(NS, SA)},
        "pod": {"name": POD, "uid": kube.pod_uid(NS, POD)},
        "node": {"name": NODE, "uid": kube.add_node(NODE)},
    }
    unbound = _claims(kube.mint(NS, SA))
    assert set(unbound["kubernetes.io"]) == {"namespace", "serviceaccount"}


def test_legacy_token_shape(kube: FakeKubeApi) -> None:
    claims = _claims(kube.mint(NS, SA, legacy=True))
    assert claims["iss"] == LEGACY_ISSUER
    assert claims["sub"] == f"system:serviceaccount:{NS}:{SA}"
    assert claims["kubernetes.io/serviceaccount/namespace"] == NS
    assert claims["kubernetes.io/serviceaccount/service-account.name"] == SA
    assert claims["kubernetes.io/serviceaccount/service-account.uid"] == kube.service_account_uid(NS, SA)
    assert claims["kubernetes.io/serviceaccount/secret.name"].startswith(f"{SA}-token-")
    assert "exp" not in claims and "aud" not in claims


def test_mint_requires_existing_objects(kube: FakeKubeApi) -> None:
    with pytest.raises(KeyError):
        kube.mint(NS, "ghost")
    with pytest.raises(KeyError):
        kube.mint(NS, SA, pod="ghost")
    kube.add_service_account(NS, "other")
    with pytest.raises(ValueError, match="does not match"):
        kube.mint(NS, "other", pod=POD)


# --------------------------------------------------------------------------- TokenReview


def test_bound_token_authenticates(kube: FakeKubeApi, api: client.ApiClient) -> None:
    token = kube.mint(NS, SA, pod=POD)
    review = _review(api, token)
    status = review.status
    assert status.authenticated is True
    assert not status.error
    assert status.audiences == ["istio-ca"]
    assert status.user.username == f"system:serviceaccount:{NS}:{SA}"
    assert status.user.uid == kube.service_account_uid(NS, SA)
    assert status.user.groups == [
        "system:serviceaccounts", f"system:serviceaccounts:{NS}", "system:authenticated",
    ]
    assert status.user.extra == {
        "authentication.kubernetes.io/pod-name": [POD],
        "authentication.kubernetes.io/pod-uid": [kube.pod_uid(NS, POD)],
        "authentication.kubernetes.io/node-name": [NODE],
        "authentication.kubernetes.io/node-uid": [kube.add_node(NODE)],
        "authentication.kubernetes.io/credential-id": [f"JTI={_claims(token)['jti']}"],
    }
    assert review.api_version == "authentication.k8s.io/v1" and review.kind == "TokenReview"
    assert review.spec.token == token and review.spec.audiences == ["istio-ca"]


def test_unbound_token_has_only_credential_id(kube: FakeKubeApi, api: client.ApiClient) -> None:
    token = kube.mint(NS, SA, audiences=("istio-ca", "other"))
    status = _review(api, token, ["other", "istio-ca", "x"]).status
    assert status.authenticated is True
    assert status.audiences == ["istio-ca", "other"]  # token order, as the API server intersects
    jti = _claims(token)["jti"]
    assert status.user.extra == {"authentication.kubernetes.io/credential-id": [f"JTI={jti}"]}


def test_review_wire_format(kube: FakeKubeApi, api: client.ApiClient) -> None:
    token = kube.mint(NS, SA)
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token, "audiences": ["istio-ca"]}}
    json_type = {"Content-Type": "application/json"}
    status, headers, data = _raw(api, "POST", REVIEW_PATH, body=body, headers=json_type)
    assert status == 201
    assert headers["Content-Type"] == "application/json"
    doc = json.loads(data)
    assert doc["kind"] == "TokenReview" and doc["apiVersion"] == "authentication.k8s.io/v1"
    assert doc["metadata"] == {"creationTimestamp": None}
    assert doc["spec"] == {"token": token, "audiences": ["istio-ca"]}
    assert doc["status"]["authenticated"] is True

    bad = kube.mint(NS, SA, audiences=("nope",))
    status, _, data = _raw(api, "POST", REVIEW_PATH, body={"spec": {"token": bad, "audiences": ["istio-ca"]}},
                           headers={"Content-Type": "application/json"})
    assert status == 201
    failed = json.loads(data)["status"]
    # As kube-apiserver: `authenticated` omitted, `user` an empty object, the error text set.
    assert set(failed) == {"user", "error"} and failed["user"] == {}
    assert failed["error"] == (
        '[invalid bearer token, token audiences ["nope"] is invalid for the target audiences ["istio-ca"]]'
    )


def _foreign(kube: FakeKubeApi) -> str:
    good = kube.mint(NS, SA, pod=POD)
    return meshca_jwt.sign(_claims(good), ec.generate_private_key(ec.SECP256R1()), _header(good)["kid"])


REJECTIONS = {
    "wrong-audience": (lambda k: k.mint(NS, SA, audiences=("vault",)), "is invalid for the target audiences"),
    "expired": (
        lambda k: k.mint(NS, SA, now=time.time() - 7200, ttl=3600), "service account token has expired"
    ),
    "not-yet-valid": (lambda k: k.mint(NS, SA, now=time.time() + 600), "is not valid yet"),
    "legacy": (lambda k: k.mint(NS, SA, legacy=True), "invalid bearer token"),
    "foreign-signature": (_foreign, "error in cryptographic primitive"),
    "garbage": (lambda k: "not-a-jwt", "invalid bearer token"),
    "other-issuer": (
        lambda k: k.mint(NS, SA, extra_claims={"iss": "https://elsewhere.example"}), "invalid bearer token"
    ),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_rejected_tokens(kube: FakeKubeApi, api: client.ApiClient, case: str) -> None:
    make, expected = REJECTIONS[case]
    status = _review(api, make(kube)).status
    assert not status.authenticated
    assert expected in status.error
    assert not status.user.username


def test_deleted_or_recreated_pod_invalidates(kube: FakeKubeApi, api: client.ApiClient) -> None:
    token = kube.mint(NS, SA, pod=POD)
    kube.delete_pod(NS, POD)
    status = _review(api, token).status
    assert not status.authenticated
    assert status.error == "[invalid bearer token, service account token has been invalidated]"
    kube.add_pod(NS, POD, service_account=SA, node=NODE)  # same name, new uid
    status = _review(api, token).status
    assert not status.authenticated and "pod UID" in status.error


def test_deleted_or_recreated_service_account_invalidates(kube: FakeKubeApi, api: client.ApiClient) -> None:
    token = kube.mint(NS, SA)
    kube.delete_service_account(NS, SA)
    status = _review(api, token).status
    assert not status.authenticated and "has been invalidated" in status.error
    kube.add_service_account(NS, SA)
    status = _review(api, token).status
    assert not status.authenticated and "service account UID" in status.error


def test_node_bound_token_checks_node(kube: FakeKubeApi, api: client.ApiClient) -> None:
    token = kube.mint(NS, SA, node="node-b")
    status = _review(api, token).status
    assert status.authenticated is True
    assert status.user.extra["authentication.kubernetes.io/node-name"] == ["node-b"]
    assert "authentication.kubernetes.io/pod-name" not in status.user.extra
    kube.delete_node("node-b")
    assert not _review(api, token).status.authenticated


def test_empty_spec_audiences_means_api_audiences(kube: FakeKubeApi, api: client.ApiClient) -> None:
    assert not _review(api, kube.mint(NS, SA), None).status.authenticated
    status = _review(api, kube.mint(NS, SA, audiences=()), None).status
    assert status.authenticated is True and status.audiences == [kube.issuer]


def test_legacy_tokens_only_when_accepted(tmp_path: Path) -> None:
    with FakeKubeApi(accept_legacy=True) as kube:
        kube.add_service_account(NS, SA)
        api = _api_client(kube, tmp_path)
        token = kube.mint(NS, SA, legacy=True)
        # Legacy tokens have no `aud`: they are only good for the API server's own audiences.
        assert not _review(api, token, ["istio-ca"]).status.authenticated
        status = _review(api, token, None).status
        assert status.authenticated is True
        assert status.user.username == f"system:serviceaccount:{NS}:{SA}"
        kube.accept_legacy = False
        assert not _review(api, token, None).status.authenticated
        api.close()


def test_key_rotation(kube: FakeKubeApi, api: client.ApiClient) -> None:
    old = kube.mint(NS, SA)
    old_kid = kube.current_kid
    new_kid = kube.rotate_key()
    assert new_kid != old_kid
    new = kube.mint(NS, SA)
    assert _header(new)["kid"] == new_kid
    assert _review(api, old).status.authenticated is True
    assert _review(api, new).status.authenticated is True
    assert {k["kid"] for k in kube.jwks()["keys"]} == {old_kid, new_kid}
    kube.rotate_key(drop_old=True)
    assert len(kube.jwks()["keys"]) == 1
    assert not _review(api, old).status.authenticated
    assert not _review(api, new).status.authenticated


def test_rs256_issuer(tmp_path: Path) -> None:
    with FakeKubeApi(algorithm="RS256") as kube:
        kube.add_service_account(NS, SA)
        api = _api_client(kube, tmp_path)
        token = kube.mint(NS, SA)
        assert _header(token)["alg"] == "RS256"
        assert _review(api, token).status.authenticated is True
        _, _, data = _raw(api, "GET", "/.well-known/openid-configuration", auth=False)
        assert json.loads(data)["id_token_signing_alg_values_supported"] == ["RS256"]
        _, _, data = _raw(api, "GET", "/openid/v1/jwks", auth=False)
        assert [k["kty"] for k in json.loads(data)["keys"]] == ["RSA"]
        api.close()


def test_malformed_review_is_400(api: client.ApiClient) -> None:
    status, _, data = _raw(api, "POST", REVIEW_PATH, body="{not json",
                                 headers={"Content-Type": "application/json"})
    assert status == 400
    doc = json.loads(data)
    assert doc["kind"] == "Status" and doc["reason"] == "BadRequest" and doc["code"] == 400
    with pytest.raises(ApiException) as info:
        _review(api, "")
    assert info.value.status == 400
    assert json.loads(info.value.body)["message"] == "token is required for TokenReview in authentication"


# --------------------------------------------------------------------------- pods


def test_read_pod(kube: FakeKubeApi, api: client.ApiClient) -> None:
    pod = client.CoreV1Api(api).read_namespaced_pod(POD, NS)
    assert pod.api_version == "v1" and pod.kind == "Pod"
    assert (pod.metadata.name, pod.metadata.namespace, pod.metadata.uid) == (POD, NS, kube.pod_uid(NS, POD))
    assert pod.metadata.creation_timestamp is not None
    assert pod.spec.service_account_name == SA and pod.spec.node_name == NODE
    assert pod.status.phase == "Running"


def test_missing_pod_is_404_status(api: client.ApiClient) -> None:
    with pytest.raises(ApiException) as info:
        client.CoreV1Api(api).read_namespaced_pod("ghost", NS)
    assert info.value.status == 404
    assert info.value.headers["Content-Type"] == "application/json"
    assert json.loads(info.value.body) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods "ghost" not found', "reason": "NotFound",
        "details": {"name": "ghost", "kind": "pods"}, "code": 404,
    }


def test_list_pods_by_node(kube: FakeKubeApi, api: client.ApiClient) -> None:
    kube.add_pod(NS, "cart-2", service_account=SA, node="node-b")
    kube.add_pod("other", "x", service_account="default", node=NODE)
    core = client.CoreV1Api(api)
    listed = core.list_namespaced_pod(NS, field_selector=f"spec.nodeName={NODE}", label_selector="app=cart")
    assert listed.kind == "PodList" and listed.metadata.resource_version
    assert [p.metadata.name for p in listed.items] == [POD]
    assert sorted(p.metadata.name for p in core.list_namespaced_pod(NS).items) == ["cart-2", POD]
    everywhere = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE}")
    found = sorted((p.metadata.namespace, p.metadata.name) for p in everywhere.items)
    assert found == sorted([(NS, POD), ("other", "x")])
    with pytest.raises(ApiException) as info:
        core.list_namespaced_pod(NS, field_selector="spec.bogus=1")
    assert info.value.status == 400
    assert json.loads(info.value.body)["message"] == "field label not supported: spec.bogus"


# --------------------------------------------------------------------------- discovery


def test_discovery_and_jwks_anonymous(kube: FakeKubeApi, api: client.ApiClient) -> None:
    status, headers, data = _raw(api, "GET", "/.well-known/openid-configuration", auth=False)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(data) == {
        "issuer": kube.url,
        "jwks_uri": kube.url + "/openid/v1/jwks",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }
    status, headers, data = _raw(api, "GET", "/openid/v1/jwks", auth=False)
    assert status == 200 and headers["Content-Type"] == "application/jwk-set+json"
    # The published keys verify a minted token with meshca's own JWT code.
    keys = meshca_jwks.parse_jwks(json.loads(data))
    token = kube.mint(NS, SA)
    jws = meshca_jwt.decode(token)
    meshca_jwt.verify(jws, keys[jws.kid or ""])
    # With the client token it works too; with a wrong one it is 401.
    assert _raw(api, "GET", "/openid/v1/jwks")[0] == 200
    wrong = {"Authorization": "Bearer wrong"}
    assert _raw(api, "GET", "/openid/v1/jwks", auth=False, headers=wrong)[0] == 401


# --------------------------------------------------------------------------- auth and faults


def test_401_without_client_token(kube: FakeKubeApi, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(kube.ca_pem)
    cfg = client.Configuration(host=kube.url)
    cfg.ssl_ca_cert = str(ca)
    cfg.retries = 0
    anonymous = client.ApiClient(cfg)
    with pytest.raises(ApiException) as info:
        client.CoreV1Api(anonymous).read_namespaced_pod(POD, NS)
    assert info.value.status == 401
    assert json.loads(info.value.body) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Unauthorized", "reason": "Unauthorized", "code": 401,
    }
    cfg.api_key = {"BearerToken": "Bearer not-the-token"}
    with pytest.raises(ApiException) as info:
        _review(anonymous, kube.mint(NS, SA))
    assert info.value.status == 401
    anonymous.close()


def test_429_with_retry_after(kube: FakeKubeApi, api: client.ApiClient) -> None:
    kube.fail(REVIEW_PATH, 429, times=1, retry_after=2)
    with pytest.raises(ApiException) as info:
        _review(api, kube.mint(NS, SA))
    assert info.value.status == 429
    assert info.value.headers["Retry-After"] == "2"
    body = json.loads(info.value.body)
    assert body["reason"] == "TooManyRequests" and body["code"] == 429
    assert body["details"] == {"retryAfterSeconds": 2}
    assert _review(api, kube.mint(NS, SA)).status.authenticated is True  # times=1 used up


@pytest.mark.parametrize(
    ("code", "reason", "fragment"),
    [
        (401, "Unauthorized", "Unauthorized"),
        (403, "Forbidden", 'tokenreviews.authentication.k8s.io is forbidden: User '
                           '"system:serviceaccount:meshca:meshca" cannot create resource "tokenreviews"'),
        (500, "InternalError", "Internal error occurred"),
        (503, "ServiceUnavailable", "unable to handle the request"),
    ],
)
def test_injected_status_errors(
    kube: FakeKubeApi, api: client.ApiClient, code: int, reason: str, fragment: str
) -> None:
    kube.fail("/apis/authentication.k8s.io", code)
    for _ in range(2):  # times=None: until cleared
        with pytest.raises(ApiException) as info:
            _review(api, kube.mint(NS, SA))
        assert info.value.status == code
        body = json.loads(info.value.body)
        assert (body["kind"], body["status"]) == ("Status", "Failure")
        assert (body["reason"], body["code"]) == (reason, code)
        assert fragment in body["message"]
    # Other paths are unaffected; clearing restores the endpoint.
    assert client.CoreV1Api(api).read_namespaced_pod(POD, NS).metadata.name == POD
    kube.clear_faults()
    assert _review(api, kube.mint(NS, SA)).status.authenticated is True


def test_forbidden_pod_message(kube: FakeKubeApi, api: client.ApiClient) -> None:
    kube.fail("/api/v1/namespaces/", 403)
    with pytest.raises(ApiException) as info:
        client.CoreV1Api(api).read_namespaced_pod(POD, NS)
    assert json.loads(info.value.body)["message"] == (
        f'pods "{POD}" is forbidden: User "system:serviceaccount:meshca:meshca" cannot get resource "pods" '
        f'in API group "" in the namespace "{NS}"'
    )


def test_unknown_path_and_wrong_method(api: client.ApiClient) -> None:
    status, _, data = _raw(api, "GET", "/api/v1/namespaces/x/secrets/y")
    assert status == 404 and json.loads(data)["reason"] == "NotFound"
    status, _, data = _raw(api, "GET", REVIEW_PATH)
    assert status == 405 and json.loads(data)["reason"] == "MethodNotAllowed"


def test_go_down_and_come_up(kube: FakeKubeApi, api: client.ApiClient, tmp_path: Path) -> None:
    core = client.CoreV1Api(api)
    assert core.read_namespaced_pod(POD, NS).metadata.name == POD  # leaves a pooled keep-alive connection
    port = kube.port
    kube.go_down()
    with pytest.raises(urllib3.exceptions.MaxRetryError) as info:
        core.read_namespaced_pod(POD, NS)
    assert isinstance(info.value.reason, urllib3.exceptions.NewConnectionError)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    # retries=False: urllib3 re-raises the connection error itself instead of MaxRetryError.
    raw_errors = _api_client(kube, tmp_path, retries=False)
    with pytest.raises(urllib3.exceptions.NewConnectionError):
        client.CoreV1Api(raw_errors).read_namespaced_pod(POD, NS)
    raw_errors.close()
    kube.come_up()
    assert kube.port == port
    assert core.read_namespaced_pod(POD, NS).metadata.uid == kube.pod_uid(NS, POD)
    assert _review(api, kube.mint(NS, SA, pod=POD)).status.authenticated is True


def test_delay(kube: FakeKubeApi, api: client.ApiClient) -> None:
    kube.delay("/api/v1", 0.4)
    core = client.CoreV1Api(api)
    started = time.monotonic()
    core.read_namespaced_pod(POD, NS)
    assert time.monotonic() - started >= 0.4
    with pytest.raises(urllib3.exceptions.MaxRetryError) as info:
        core.read_namespaced_pod(POD, NS, _request_timeout=0.1)
    assert isinstance(info.value.reason, urllib3.exceptions.ReadTimeoutError)
    kube.clear_faults()
    started = time.monotonic()
    _review(api, kube.mint(NS, SA))
    assert time.monotonic() - started < 0.4


def test_calls_are_counted(kube: FakeKubeApi, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    _review(api, kube.mint(NS, SA))
    _review(api, "garbage")
    core.read_namespaced_pod(POD, NS)
    with pytest.raises(ApiException):
        core.read_namespaced_pod("ghost", NS)
    core.list_namespaced_pod(NS, field_selector=f"spec.nodeName={NODE}")
    _raw(api, "GET", "/.well-known/openid-configuration", auth=False)
    _raw(api, "GET", "/openid/v1/jwks", auth=False)
    kube.fail("/openid", 503, times=1)
    _raw(api, "GET", "/openid/v1/jwks", auth=False)
    assert kube.calls == {
        ("POST", "tokenreviews"): 2,
        ("GET", "pod"): 2,
        ("GET", "pods"): 1,
        ("GET", "discovery"): 1,
        ("GET", "jwks"): 2,
    }
    kube.reset_calls()
    assert not kube.calls


def test_default_client_retries_get_on_retry_after(kube: FakeKubeApi, tmp_path: Path) -> None:
    """Pins a v37 client quirk: with Configuration.retries left at None, urllib3's default
    Retry(3) silently retries GETs answered 429/503 *with* Retry-After (sleeping that long)
    and connection/read failures; POSTs (TokenReview) are never retried."""
    default = _api_client(kube, tmp_path, retries=None)
    kube.fail("/api/v1", 429, times=2, retry_after=0)
    assert client.CoreV1Api(default).read_namespaced_pod(POD, NS).metadata.name == POD
    assert kube.calls[("GET", "pod")] == 3
    kube.fail(REVIEW_PATH, 429, times=1, retry_after=0)
    with pytest.raises(ApiException) as info:
        _review(default, kube.mint(NS, SA))
    assert info.value.status == 429 and kube.calls[("POST", "tokenreviews")] == 1
    default.close()
