"""Proves FakeKubeApi through the real `kubernetes` client (v37, openapi-generator/urllib3).

Clients here are built the way meshca's adapter should build them: a fresh Configuration
with `retries` set BEFORE the ApiClient exists (the urllib3 pool is created in
ApiClient.__init__), then `new_client_from_config(..., client_configuration=cfg)`.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import urllib3
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client, config, watch
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
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return claims


def _header(token: str) -> dict[str, Any]:
    part = token.split(".")[0]
    header: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return header


def _body(info: pytest.ExceptionInfo[ApiException]) -> Any:
    """The JSON body of the API's refusal (the client types it Optional)."""
    assert info.value.body is not None
    return json.loads(info.value.body)


def _api_client(kube: FakeKubeApi, tmp_path: Path, *, retries: Any = 0) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.retries = retries  # must be set before ApiClient() builds its urllib3 PoolManager
    path = kube.kubeconfig(tmp_path / f"kubeconfig-{time.monotonic_ns()}")
    api_client: client.ApiClient = config.new_client_from_config(config_file=str(path),
                                                                 client_configuration=cfg)
    return api_client


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
    data = resp.read()
    return resp.status, dict(resp.getheaders()), data


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


REJECTIONS: dict[str, tuple[Callable[[FakeKubeApi], str], str]] = {
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
    assert _body(info)["message"] == "token is required for TokenReview in authentication"


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
    assert info.value.headers is not None
    assert info.value.headers["Content-Type"] == "application/json"
    assert _body(info) == {
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
    assert sorted(p.metadata.name or "" for p in core.list_namespaced_pod(NS).items) == ["cart-2", POD]
    everywhere = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE}")
    found = sorted((p.metadata.namespace, p.metadata.name) for p in everywhere.items)
    assert found == sorted([(NS, POD), ("other", "x")])
    with pytest.raises(ApiException) as info:
        core.list_namespaced_pod(NS, field_selector="spec.bogus=1")
    assert info.value.status == 400
    assert _body(info)["message"] == "field label not supported: spec.bogus"


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
    assert _body(info) == {
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
    assert info.value.headers is not None
    assert info.value.headers["Retry-After"] == "2"
    body = _body(info)
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
        body = _body(info)
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
    assert _body(info)["message"] == (
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


# --------------------------------------------------------------------------- namespaces


def _namespace_names(api: client.ApiClient, selector: str | None = None, **kwargs: Any) -> list[str]:
    listed = client.CoreV1Api(api).list_namespace(label_selector=selector, **kwargs)
    return [n.metadata.name or "" for n in listed.items]


@pytest.fixture
def mesh(kube: FakeKubeApi) -> FakeKubeApi:
    kube.add_namespace("prod-a", {"istio-injection": "enabled", "env": "prod", "tier": "1"})
    kube.add_namespace("prod-b", {"istio-injection": "enabled", "env": "prod"})
    kube.add_namespace("stage", {"istio-injection": "disabled", "env": "stage"})
    kube.add_namespace("plain")
    return kube


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (None, ["plain", "prod-a", "prod-b", "stage"]),
        ("", ["plain", "prod-a", "prod-b", "stage"]),
        ("istio-injection=enabled", ["prod-a", "prod-b"]),
        ("istio-injection==enabled", ["prod-a", "prod-b"]),
        ("istio-injection", ["prod-a", "prod-b", "stage"]),
        ("!istio-injection", ["plain"]),
        ("istio-injection!=enabled", ["plain", "stage"]),  # != also matches objects without the key
        ("env=prod,tier=1", ["prod-a"]),
        (" env = prod , tier ", ["prod-a"]),
        ("env in (prod, stage),!tier", ["prod-b", "stage"]),
        ("env notin (prod)", ["plain", "stage"]),
        ("tier>0", ["prod-a"]),
        ("tier<1", []),
        ("kubernetes.io/metadata.name=stage", ["stage"]),
        ("env=", []),
    ],
)
def test_list_namespaces_by_label_selector(
    mesh: FakeKubeApi, api: client.ApiClient, selector: str | None, expected: list[str]
) -> None:
    assert _namespace_names(api, selector) == expected


def test_namespace_shape(mesh: FakeKubeApi, api: client.ApiClient) -> None:
    listed = client.CoreV1Api(api).list_namespace(label_selector="env=stage")
    assert listed.kind == "NamespaceList" and listed.api_version == "v1"
    assert listed.metadata.resource_version and listed.metadata._continue is None
    (ns,) = listed.items
    assert ns.metadata.labels == {
        "istio-injection": "disabled", "env": "stage", "kubernetes.io/metadata.name": "stage",
    }
    assert ns.metadata.uid and ns.metadata.creation_timestamp is not None
    assert ns.spec.finalizers == ["kubernetes"] and ns.status.phase == "Active"
    _, _, data = _raw(api, "GET", "/api/v1/namespaces?labelSelector=env%3Dstage")
    # As from the API server, list items carry neither kind nor apiVersion.
    assert set(json.loads(data)["items"][0]) == {"metadata", "spec", "status"}
    # Relabelling keeps the uid and moves the resourceVersion.
    before = ns.metadata.resource_version
    assert mesh.add_namespace("stage", {"env": "prod"}) == ns.metadata.uid
    assert _namespace_names(api, "env=prod") == ["prod-a", "prod-b", "stage"]
    again = client.CoreV1Api(api).list_namespace(field_selector="metadata.name=stage").items[0]
    assert again.metadata.resource_version is not None and before is not None
    assert int(again.metadata.resource_version) > int(before)
    mesh.terminate_namespace("plain")
    assert _namespace_names(api, field_selector="status.phase=Terminating") == ["plain"]
    mesh.delete_namespace("plain")
    assert "plain" not in _namespace_names(api)


@pytest.mark.parametrize(
    ("selector", "fragment"),
    [
        ("env=prod,", "expected: identifier after ','"),
        ("=prod", "found '=', expected: !, identifier, or 'end of string'"),
        ("env in prod", "unable to parse requirement: found 'prod', expected: '('"),
        ("env=a b", "found 'b', expected: ',' or 'end of string'"),
        ("-bad=1", "unable to parse requirement: key: Invalid value: \"-bad\""),
        ("env=bad value!", "found 'value', expected: ',' or 'end of string'"),
        ("env=-x", 'unable to parse requirement: values[0][env]: Invalid value: "-x"'),
        ("tier>one", "for 'gt', 'lt' operators, the value must be an integer"),
    ],
)
def test_bad_label_selector_is_400(api: client.ApiClient, selector: str, fragment: str) -> None:
    with pytest.raises(ApiException) as info:
        client.CoreV1Api(api).list_namespace(label_selector=selector)
    assert info.value.status == 400
    body = _body(info)
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "BadRequest", 400)
    assert fragment in body["message"]


def test_namespace_list_pages(mesh: FakeKubeApi, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    first = core.list_namespace(limit=3)
    assert [n.metadata.name for n in first.items] == ["plain", "prod-a", "prod-b"]
    assert first.metadata._continue and first.metadata.remaining_item_count == 1
    rest = core.list_namespace(limit=3, _continue=first.metadata._continue)
    assert [n.metadata.name for n in rest.items] == ["stage"] and rest.metadata._continue is None
    with pytest.raises(ApiException) as info:
        core.list_namespace(limit=3, _continue="garbage")
    assert info.value.status == 400
    # As client-go's pager knows: a continue token goes without a resourceVersion (other than 0).
    assert core.list_namespace(limit=3, _continue=first.metadata._continue, resource_version="0").items
    with pytest.raises(ApiException) as info:
        core.list_namespace(limit=3, _continue=first.metadata._continue, resource_version="5")
    assert _body(info)["message"] == (
        "specifying resource version is not allowed when using continue"
    )


# --------------------------------------------------------------------------- configmaps

CM = "istio-ca-root-cert"


def _configmap(name: str = CM, data: dict[str, str] | None = None, **meta: Any) -> client.V1ConfigMap:
    return client.V1ConfigMap(
        api_version="v1", kind="ConfigMap",
        metadata=client.V1ObjectMeta(name=name, **meta), data=data if data is not None else {"k": "v"},
    )


def test_configmap_create_read_replace(mesh: FakeKubeApi, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    created = core.create_namespaced_config_map("prod-a", _configmap(labels={"app": "x"}))
    assert created.kind == "ConfigMap" and created.api_version == "v1"
    assert (created.metadata.name, created.metadata.namespace) == (CM, "prod-a")
    assert created.metadata.uid and created.metadata.creation_timestamp is not None
    assert created.metadata.labels == {"app": "x"} and created.data == {"k": "v"}
    version = created.metadata.resource_version
    read = core.read_namespaced_config_map(CM, "prod-a")
    assert read.metadata.resource_version == version and read.data == {"k": "v"}
    _, _, data = _raw(api, "GET", f"/api/v1/namespaces/prod-a/configmaps/{CM}")
    assert json.loads(data) == mesh.configmap("prod-a", CM) == {
        "kind": "ConfigMap", "apiVersion": "v1",
        "metadata": {
            "name": CM, "namespace": "prod-a", "uid": created.metadata.uid, "resourceVersion": version,
            "creationTimestamp": created.metadata.creation_timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "labels": {"app": "x"},
        },
        "data": {"k": "v"},
    }

    read.data = {"k": "v2"}
    replaced = core.replace_namespaced_config_map(CM, "prod-a", read)
    assert replaced.data == {"k": "v2"} and replaced.metadata.uid == created.metadata.uid
    assert replaced.metadata.resource_version is not None and version is not None
    assert int(replaced.metadata.resource_version) > int(version)
    # Replacing with identical content writes nothing: the resourceVersion stays.
    same = core.replace_namespaced_config_map(CM, "prod-a", replaced)
    assert same.metadata.resource_version == replaced.metadata.resource_version
    # Without a resourceVersion the update is unconditional.
    blind = core.replace_namespaced_config_map(CM, "prod-a", _configmap(data={"k": "v3"}))
    assert blind.data == {"k": "v3"} and blind.metadata.labels is None

    listed = core.list_namespaced_config_map("prod-a")
    assert listed.kind == "ConfigMapList" and [c.metadata.name for c in listed.items] == [CM]
    core.create_namespaced_config_map("prod-b", _configmap(labels={"app": "y"}))
    core.create_namespaced_config_map("prod-b", _configmap("other"))
    everywhere = core.list_config_map_for_all_namespaces(field_selector=f"metadata.name={CM}")
    assert [(c.metadata.namespace, c.metadata.name) for c in everywhere.items] == [
        ("prod-a", CM), ("prod-b", CM),
    ]
    assert [c.metadata.namespace for c in core.list_config_map_for_all_namespaces(
        label_selector="app=y").items] == ["prod-b"]
    assert core.list_namespaced_config_map("nowhere").items == []  # as the API server: empty, not 404


def test_configmap_conflicts_are_409(mesh: FakeKubeApi, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    first = core.create_namespaced_config_map("prod-a", _configmap())
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map("prod-a", _configmap())
    assert info.value.status == 409
    assert _body(info) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'configmaps "{CM}" already exists', "reason": "AlreadyExists",
        "details": {"name": CM, "kind": "configmaps"}, "code": 409,
    }
    mesh.put_configmap("prod-a", CM, {"k": "someone else"})
    first.data = {"k": "mine"}
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_config_map(CM, "prod-a", first)  # stale resourceVersion
    assert info.value.status == 409
    assert _body(info) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'Operation cannot be fulfilled on configmaps "{CM}": the object has been modified; '
                   "please apply your changes to the latest version and try again",
        "reason": "Conflict", "details": {"name": CM, "kind": "configmaps"}, "code": 409,
    }
    assert core.read_namespaced_config_map(CM, "prod-a").data == {"k": "someone else"}


def test_configmap_not_found(mesh: FakeKubeApi, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    for namespace in ("prod-a", "nowhere"):
        with pytest.raises(ApiException) as info:
            core.read_namespaced_config_map(CM, namespace)
        assert info.value.status == 404
        assert _body(info) == {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f'configmaps "{CM}" not found', "reason": "NotFound",
            "details": {"name": CM, "kind": "configmaps"}, "code": 404,
        }
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_config_map(CM, "prod-a", _configmap())
    assert info.value.status == 404 and _body(info)["details"]["kind"] == "configmaps"
    writes: tuple[Callable[[], client.V1ConfigMap], ...] = (
        lambda: core.create_namespaced_config_map("nowhere", _configmap()),
        lambda: core.replace_namespaced_config_map(CM, "nowhere", _configmap()),
    )
    for write in writes:
        with pytest.raises(ApiException) as info:
            write()
        assert info.value.status == 404
        body = _body(info)
        assert body["message"] == 'namespaces "nowhere" not found'
        assert body["details"] == {"name": "nowhere", "kind": "namespaces"}


def test_configmap_delete(mesh: FakeKubeApi, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    created = core.create_namespaced_config_map("prod-a", _configmap())
    with pytest.raises(ApiException) as info:
        core.delete_namespaced_config_map(CM, "prod-a", body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version="1")))
    assert info.value.status == 409 and "Precondition failed" in _body(info)["message"]
    status = core.delete_namespaced_config_map(CM, "prod-a", body=client.V1DeleteOptions(
        preconditions=client.V1Preconditions(uid=created.metadata.uid)))
    # The v37 client hands delete answers back as plain dicts ("object" in its response map).
    assert status == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": CM, "kind": "configmaps", "uid": created.metadata.uid},
    }
    assert mesh.configmap("prod-a", CM) is None
    with pytest.raises(ApiException) as info:
        core.delete_namespaced_config_map(CM, "prod-a")
    assert info.value.status == 404


def test_configmap_validation(mesh: FakeKubeApi, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map("prod-a", _configmap(data={"bad/key": "v"}))
    assert info.value.status == 422
    body = _body(info)
    assert body["reason"] == "Invalid" and body["details"]["kind"] == "ConfigMap"
    assert body["message"].startswith(f'ConfigMap "{CM}" is invalid: data[bad/key]: Invalid value')
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map("prod-a", _configmap("Upper"))
    assert info.value.status == 422
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map("prod-a", _configmap(resource_version="5"))
    assert info.value.status == 500
    generated = core.create_namespaced_config_map("prod-a", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(generate_name="gen-")))
    assert generated.metadata.name is not None
    assert generated.metadata.name.startswith("gen-") and len(generated.metadata.name) == 9
    core.create_namespaced_config_map("prod-a", _configmap())
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_config_map(CM, "prod-a", _configmap("elsewhere"))
    assert info.value.status == 400
    assert _body(info)["message"] == (
        f"the name of the object (elsewhere) does not match the name on the URL ({CM})"
    )
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_config_map(CM, "prod-a", _configmap(namespace="prod-b"))
    assert info.value.status == 400
    status, _, data = _raw(api, "PUT", f"/api/v1/namespaces/prod-a/configmaps/{CM}",
                           body={"metadata": {"name": CM}, "data": {"k": 1}},
                           headers={"Content-Type": "application/json"})
    assert status == 400 and "cannot unmarshal number" in json.loads(data)["message"]
    status, _, data = _raw(api, "PATCH", f"/api/v1/namespaces/prod-a/configmaps/{CM}", body={},
                           headers={"Content-Type": "application/merge-patch+json"})
    assert status == 405  # PATCH is not served by this fake (the real API server has it)


def test_immutable_configmap(mesh: FakeKubeApi, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    cm = _configmap()
    cm.immutable = True
    created = core.create_namespaced_config_map("prod-a", cm)
    assert created.immutable is True
    created.data = {"k": "changed"}
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_config_map(CM, "prod-a", created)
    assert info.value.status == 422
    assert _body(info)["details"]["causes"] == [
        {"reason": "FieldValueForbidden", "message": "Forbidden: field is immutable when `immutable` is set",
         "field": "data"},
    ]
    # Labels may still change.
    created.data = {"k": "v"}
    created.metadata.labels = {"a": "b"}
    assert core.replace_namespaced_config_map(CM, "prod-a", created).metadata.labels == {"a": "b"}


def test_terminating_namespace_refuses_creation(mesh: FakeKubeApi, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("stage", _configmap())
    mesh.terminate_namespace("stage")
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map("stage", _configmap("new"))
    assert info.value.status == 403
    body = _body(info)
    assert body["reason"] == "Forbidden"
    assert body["details"]["causes"][0]["reason"] == "NamespaceTerminating"
    # Updates are still admitted, as by the NamespaceLifecycle plugin.
    assert core.replace_namespaced_config_map(CM, "stage", _configmap(data={"k": "w"})).data == {"k": "w"}


def test_configmap_calls_faults_and_before(mesh: FakeKubeApi, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.list_namespace()
    core.create_namespaced_config_map("prod-a", _configmap())
    read = core.read_namespaced_config_map(CM, "prod-a")
    # A concurrent writer lands between this client's read and its write.
    item = f"/api/v1/namespaces/prod-a/configmaps/{CM}"
    mesh.before("PUT", item, lambda: mesh.put_configmap("prod-a", CM, {"k": "theirs"}))
    read.data = {"k": "mine"}
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_config_map(CM, "prod-a", read)
    assert info.value.status == 409
    read = core.read_namespaced_config_map(CM, "prod-a")
    assert read.data == {"k": "theirs"}
    read.data = {"k": "mine"}
    assert core.replace_namespaced_config_map(CM, "prod-a", read).data == {"k": "mine"}  # times=1 used up
    assert mesh.calls == {
        ("GET", "namespaces"): 1,
        ("POST", "configmaps"): 1,
        ("GET", "configmaps"): 2,
        ("PUT", "configmaps"): 2,
    }
    mesh.fail("/api/v1/namespaces/prod-b/configmaps", 403)
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map("prod-b", _configmap())
    assert _body(info)["message"] == (
        'configmaps is forbidden: User "system:serviceaccount:meshca:meshca" cannot create resource '
        '"configmaps" in API group "" in the namespace "prod-b"'
    )
    mesh.fail("/api/v1/namespaces", 403)
    with pytest.raises(ApiException) as info:
        core.list_namespace()
    assert _body(info)["message"] == (
        'namespaces is forbidden: User "system:serviceaccount:meshca:meshca" cannot list resource '
        '"namespaces" in API group "" at the cluster scope'
    )


# --------------------------------------------------------------------------- authorization policies

GROUP, PLURAL = "security.istio.io", "authorizationpolicies"
DENY_ALL = {"action": "DENY", "rules": [{}]}
ALLOW_GET = {"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}


def _watch_events(api: client.ApiClient, resource_version: str | None, *, timeout: int = 2,
                  namespace: str | None = None, until: int | None = None,
                  **extra: Any) -> list[dict[str, Any]]:
    """Events of one watch through the client's Watch, as (type, object) dicts; `until` stops early."""
    custom: Any = client.CustomObjectsApi(api)  # custom objects come back untyped
    args: tuple[Any, ...] = (GROUP, "v1", PLURAL)
    func = custom.list_cluster_custom_object
    if namespace is not None:
        func, args = custom.list_namespaced_custom_object, (GROUP, "v1", namespace, PLURAL)
    options = {"timeout_seconds": timeout, **extra}
    if resource_version is not None:
        options["resource_version"] = resource_version
    events = []
    watcher: Any = watch.Watch()
    for event in watcher.stream(func, *args, **options):
        events.append({"type": event["type"], "object": event["raw_object"]})
        if until is not None and len(events) >= until:
            watcher.stop()
    return events


@pytest.fixture
def policies(kube: FakeKubeApi) -> FakeKubeApi:
    kube.add_namespace("shop")
    kube.add_namespace("bank")
    kube.put_authorization_policy("shop", "deny-all", DENY_ALL, labels={"team": "a"})
    kube.put_authorization_policy("bank", "allow-get", ALLOW_GET, annotations={"istio.io/dry-run": "true"})
    return kube


def test_authorization_policies_list_and_get_like_a_custom_resource(
    policies: FakeKubeApi, api: client.ApiClient
) -> None:
    custom: Any = client.CustomObjectsApi(api)  # custom objects come back untyped
    listed = custom.list_cluster_custom_object(GROUP, "v1", PLURAL)
    assert listed["kind"] == "AuthorizationPolicyList" and listed["apiVersion"] == f"{GROUP}/v1"
    assert int(listed["metadata"]["resourceVersion"]) >= int(
        listed["items"][1]["metadata"]["resourceVersion"])
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in listed["items"]] == [
        ("bank", "allow-get"), ("shop", "deny-all")]
    item = listed["items"][1]  # custom resources keep apiVersion and kind inside lists
    assert item["apiVersion"] == f"{GROUP}/v1" and item["kind"] == "AuthorizationPolicy"
    assert item["spec"] == DENY_ALL and item["metadata"]["labels"] == {"team": "a"}
    assert item["metadata"]["generation"] == 1 and item["metadata"]["uid"]
    one = custom.get_namespaced_custom_object(GROUP, "v1beta1", "bank", PLURAL, "allow-get")
    assert one["apiVersion"] == f"{GROUP}/v1beta1"
    assert one["metadata"]["annotations"] == {"istio.io/dry-run": "true"}
    in_shop = custom.list_namespaced_custom_object(GROUP, "v1", "shop", PLURAL, label_selector="team=a")
    assert [i["metadata"]["name"] for i in in_shop["items"]] == ["deny-all"]
    paged = custom.list_cluster_custom_object(GROUP, "v1", PLURAL, limit=1)
    assert len(paged["items"]) == 1 and paged["metadata"]["continue"]
    rest = custom.list_cluster_custom_object(GROUP, "v1", PLURAL, _continue=paged["metadata"]["continue"])
    assert [i["metadata"]["name"] for i in rest["items"]] == ["deny-all"]
    with pytest.raises(ApiException) as info:
        custom.get_namespaced_custom_object(GROUP, "v1", "shop", PLURAL, "nope")
    assert info.value.status == 404
    assert json.loads(str(info.value.body))["details"] == {"name": "nope", "group": GROUP, "kind": PLURAL}
    assert policies.calls[("GET", PLURAL)] == 6


def test_authorization_policy_writes_move_resource_version_only_on_change(policies: FakeKubeApi) -> None:
    before = policies.authorization_policy("shop", "deny-all")
    assert before is not None
    same = policies.put_authorization_policy("shop", "deny-all", DENY_ALL, labels={"team": "a"})
    assert same == before["metadata"]["resourceVersion"]
    relabelled = policies.put_authorization_policy("shop", "deny-all", DENY_ALL)
    assert int(relabelled) > int(same)
    after = policies.authorization_policy("shop", "deny-all")
    assert after is not None and after["metadata"]["generation"] == 1  # labels are not spec
    policies.put_authorization_policy("shop", "deny-all", ALLOW_GET)
    after = policies.authorization_policy("shop", "deny-all")
    assert after is not None and after["metadata"]["generation"] == 2
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    with pytest.raises(KeyError):
        policies.put_authorization_policy("nowhere", "p", DENY_ALL)


def test_watch_streams_changes_after_the_listed_resource_version(
    policies: FakeKubeApi, api: client.ApiClient
) -> None:
    custom: Any = client.CustomObjectsApi(api)
    listed = custom.list_cluster_custom_object(GROUP, "v1", PLURAL)
    policies.put_authorization_policy("shop", "allow-get", ALLOW_GET)  # before the watch: replayed
    changes: list[Callable[[], object]] = [
        lambda: policies.put_authorization_policy("shop", "deny-all", ALLOW_GET),
        lambda: policies.delete_authorization_policy("bank", "allow-get"),
    ]

    def later() -> None:
        time.sleep(0.2)  # while the client is blocked reading the stream
        for change in changes:
            change()

    threading.Thread(target=later, daemon=True).start()
    events = _watch_events(api, listed["metadata"]["resourceVersion"], until=3, timeout=5)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "allow-get"), ("MODIFIED", "deny-all"), ("DELETED", "allow-get")]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert events[1]["object"]["spec"] == ALLOW_GET
    assert events[2]["object"]["metadata"]["namespace"] == "bank"
    assert policies.calls[("WATCH", PLURAL)] == 1


def test_watch_from_any_version_starts_with_the_current_objects_and_filters_by_namespace(
    policies: FakeKubeApi, api: client.ApiClient
) -> None:
    everything = _watch_events(api, None, timeout=1)
    assert sorted((e["type"], e["object"]["metadata"]["name"]) for e in everything) == [
        ("ADDED", "allow-get"), ("ADDED", "deny-all")]
    assert [e["object"]["metadata"]["name"] for e in _watch_events(api, "0", timeout=1, namespace="shop")] \
        == ["deny-all"]


def test_watch_ends_after_timeout_seconds(policies: FakeKubeApi, api: client.ApiClient) -> None:
    started = time.monotonic()
    rv = policies.put_authorization_policy("shop", "late", DENY_ALL)
    assert _watch_events(api, rv, timeout=1) == []
    assert 0.9 <= time.monotonic() - started < 3


def test_watch_sends_bookmarks_only_when_asked(policies: FakeKubeApi, api: client.ApiClient) -> None:
    policies.bookmark_interval = 0.2
    rv = policies.put_authorization_policy("shop", "late", DENY_ALL)
    policies.add_namespace("other")  # moves the resourceVersion without a policy event
    marks = _watch_events(api, rv, timeout=1, allow_watch_bookmarks=True, until=1)
    assert marks == [{"type": "BOOKMARK", "object": {
        "apiVersion": f"{GROUP}/v1", "kind": "AuthorizationPolicy",
        "metadata": {"resourceVersion": str(int(rv) + 1)}}}]
    assert _watch_events(api, rv, timeout=1) == []


def test_watch_from_a_forgotten_version_is_410_expired(policies: FakeKubeApi, api: client.ApiClient) -> None:
    rv = policies.put_authorization_policy("shop", "one", DENY_ALL)
    policies.put_authorization_policy("shop", "two", DENY_ALL)
    policies.expire_watch_history()
    # The watch cache answers 200 and one ERROR event; the client turns it into a 410 ApiException.
    status, headers, data = _raw(api, "GET", f"/apis/{GROUP}/v1/{PLURAL}?watch=true&resourceVersion={rv}")
    assert status == 200 and headers["Transfer-Encoding"] == "chunked"
    assert headers["Content-Type"] == "application/json"
    current = policies.authorization_policy("shop", "two")
    assert current is not None
    assert json.loads(data) == {"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"too old resource version: {rv} ({current['metadata']['resourceVersion']})",
        "reason": "Expired", "code": 410}}
    with pytest.raises(ApiException) as info:
        _watch_events(api, rv)
    assert info.value.status == 410
    assert policies.expired_watches == 2
    custom: Any = client.CustomObjectsApi(api)
    listed = custom.list_cluster_custom_object(GROUP, "v1", PLURAL)
    assert _watch_events(api, listed["metadata"]["resourceVersion"], timeout=1) == []  # fresh list: fine


def test_watch_window_keeps_only_the_latest_events(policies: FakeKubeApi, api: client.ApiClient) -> None:
    policies.watch_window = 2
    first = policies.put_authorization_policy("shop", "a", DENY_ALL)
    policies.put_authorization_policy("shop", "b", DENY_ALL)
    policies.put_authorization_policy("shop", "c", DENY_ALL)
    with pytest.raises(ApiException) as info:
        _watch_events(api, str(int(first) - 1))  # would need "a", which the window dropped
    assert info.value.status == 410
    kept = _watch_events(api, first, timeout=1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in kept] == [("ADDED", "b"), ("ADDED", "c")]


def test_open_watch_that_falls_out_of_the_window_ends(policies: FakeKubeApi, api: client.ApiClient) -> None:
    rv = policies.put_authorization_policy("shop", "a", DENY_ALL)

    def forget() -> None:
        time.sleep(0.2)
        with policies.atomic():  # the watch never sees "b": it ends instead
            policies.put_authorization_policy("shop", "b", DENY_ALL)
            policies.expire_watch_history()

    threading.Thread(target=forget, daemon=True).start()
    started = time.monotonic()
    assert _watch_events(api, rv, timeout=10) == []
    assert time.monotonic() - started < 5


def test_deleting_a_namespace_deletes_its_policies(policies: FakeKubeApi, api: client.ApiClient) -> None:
    rv = policies.put_authorization_policy("bank", "second", DENY_ALL)
    policies.delete_namespace("bank")
    events = _watch_events(api, rv, timeout=1)
    assert sorted((e["type"], e["object"]["metadata"]["name"]) for e in events) == [
        ("DELETED", "allow-get"), ("DELETED", "second")]
    assert policies.authorization_policy("bank", "second") is None


def test_watch_faults_and_going_down(policies: FakeKubeApi, api: client.ApiClient) -> None:
    policies.fail(f"/apis/{GROUP}/v1/{PLURAL}", 403, times=1)
    with pytest.raises(ApiException) as info:
        _watch_events(api, "0")
    assert info.value.status == 403
    assert json.loads(str(info.value.body))["message"] == (
        f'{PLURAL}.{GROUP} is forbidden: User "system:serviceaccount:meshca:meshca" cannot list resource '
        f'"{PLURAL}" in API group "{GROUP}" at the cluster scope')
    threading.Timer(0.3, policies.go_down).start()
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.HTTPError):
        _watch_events(api, None, timeout=30)  # the stream breaks off: no terminating chunk
    assert time.monotonic() - started < 5
