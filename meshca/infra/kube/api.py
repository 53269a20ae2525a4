"""What meshca asks a Kubernetes API server, through the official client.

Every call is synchronous (the client uses urllib3); callers run them in a thread pool.
Failures are translated once, here, into KubeApiError with the HTTP status and any
Retry-After, so nothing above this module knows the client's exception types.
"""

from __future__ import annotations

import json
import os
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from meshca.service.ports import KubeApiError, PodInfo, TokenReviewResult

_TIMEOUT = (3.0, 10.0)  # connect, read
KUBE_THREADS = 16  # threads that call an API server at once, per worker


class KubeApi:
    def __init__(self, api_client: k8s.ApiClient, cluster: str) -> None:
        self.cluster = cluster
        self._client = api_client
        self._auth = k8s.AuthenticationV1Api(api_client)
        self._core = k8s.CoreV1Api(api_client)

    @classmethod
    def connect(cls, cluster: str, kubeconfig: str | None) -> KubeApi:
        """From a kubeconfig file, or the pod's in-cluster service account when None."""
        configuration = k8s.Configuration()
        if kubeconfig:
            k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration,
                                        persist_config=False)
        else:
            k8s_config.load_incluster_config(client_configuration=configuration)
        configuration.retries = False  # meshca decides about retries (rate limit, Retry-After)
        configuration.connection_pool_maxsize = KUBE_THREADS  # one connection per calling thread
        return cls(k8s.ApiClient(configuration), cluster)

    @property
    def api_client(self) -> k8s.ApiClient:
        """The client this adapter talks through (shared by other adapters of the same server)."""
        return self._client

    @staticmethod
    def in_cluster() -> bool:
        return "KUBERNETES_SERVICE_HOST" in os.environ

    def token_review(self, token: str, audiences: list[str]) -> TokenReviewResult:
        body = k8s.V1TokenReview(
            api_version="authentication.k8s.io/v1", kind="TokenReview",
            spec=k8s.V1TokenReviewSpec(token=token, audiences=audiences),
        )
        review = self._call(self._auth.create_token_review, body=body, _request_timeout=_TIMEOUT)
        status = review.status
        if status is None:
            return TokenReviewResult(False, "", (), error="TokenReview returned no status")
        user = status.user
        extra = {k: tuple(v or ()) for k, v in ((user.extra or {}) if user else {}).items()}
        return TokenReviewResult(
            authenticated=bool(status.authenticated),
            username=(user.username or "") if user else "",
            groups=tuple((user.groups or []) if user else ()),
            extra=extra,
            audiences=tuple(status.audiences or ()),
            error=status.error or "",
        )

    def pod(self, namespace: str, name: str) -> PodInfo | None:
        """The pod, or None when the API server says 404."""
        try:
            pod = self._call(self._core.read_namespaced_pod, name=name, namespace=namespace,
                             _request_timeout=_TIMEOUT)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise
        return _pod_info(pod)

    def pods_on_node(self, namespace: str, node: str) -> list[PodInfo]:
        pods = self._call(self._core.list_namespaced_pod, namespace=namespace,
                          field_selector=f"spec.nodeName={node}", _request_timeout=_TIMEOUT)
        return [_pod_info(p) for p in pods.items or []]

    def get_json(self, path: str) -> dict[str, Any]:
        """A raw GET of an API-server path, e.g. the service-account issuer's discovery documents."""
        def get() -> Any:
            params = self._client.param_serialize("GET", path, auth_settings=["BearerToken"])
            response = self._client.call_api(*params, _request_timeout=_TIMEOUT)
            data: bytes = response.response.data
            if not 200 <= response.status < 300:
                raise ApiException(status=response.status, reason=response.reason)
            return json.loads(data)

        document = self._call(get)
        if not isinstance(document, dict):
            raise KubeApiError(f"{path} did not return a JSON object")
        return document

    def _call(self, method: Any, **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except ApiException as exc:
            raise KubeApiError(f"Kubernetes API answered {exc.status} {exc.reason}",
                               status=exc.status, retry_after=retry_after(exc.headers)) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeApiError(f"Kubernetes API not reachable: {type(exc).__name__}") from None


def retry_after(headers: Any) -> float | None:
    """Seconds from a `Retry-After` header (delta form), or None."""
    if not headers:
        return None
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _pod_info(pod: Any) -> PodInfo:
    return PodInfo(
        name=pod.metadata.name, namespace=pod.metadata.namespace, uid=pod.metadata.uid or "",
        service_account=(pod.spec.service_account_name or "") if pod.spec else "",
        node_name=(pod.spec.node_name or "") if pod.spec else "",
    )
