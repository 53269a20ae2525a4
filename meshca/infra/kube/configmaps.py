"""The root-certificate ConfigMap in mesh namespaces, through the official client.

Istio's sidecars and gateways read the mesh's trust anchors from the ConfigMap
`istio-ca-root-cert`, key `root-cert.pem`, in their own namespace (docs/contracts.md §4). This
adapter lists the namespaces a label selector picks and brings that ConfigMap to a given
bundle with optimistic concurrency: read, compare, then create, or replace carrying the
resourceVersion that was read, so a concurrent writer makes the API server answer 409 and the
cycle starts again from a fresh read. Nothing is written when the content already matches.

meshca owns the `root-cert.pem` key and the `app.kubernetes.io/managed-by` label; other keys,
labels and annotations someone put on the ConfigMap are kept as they are.

Every call blocks (run them in a thread pool); failures become KubeApiError.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from meshca.infra.kube.api import KubeApi, retry_after
from meshca.service.bundle_publisher import SyncOutcome
from meshca.service.ports import KubeApiError

ROOT_CERT_CONFIGMAP = "istio-ca-root-cert"
ROOT_CERT_KEY = "root-cert.pem"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "meshca"

_TIMEOUT = (3.0, 10.0)  # connect, read
_PAGE = 500  # namespaces or ConfigMaps per list request
_ATTEMPTS = 5  # read-compare-write cycles before a ConfigMap that keeps changing is given up on

T = TypeVar("T")


class RootCertConfigMaps:
    """The `istio-ca-root-cert` ConfigMaps of one cluster (the BundlePublisher's port)."""

    def __init__(self, api_client: k8s.ApiClient, *, attempts: int = _ATTEMPTS) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._core = k8s.CoreV1Api(api_client)
        self._attempts = attempts

    @classmethod
    def of(cls, api: KubeApi) -> RootCertConfigMaps:
        """Through the same client (and connection pool) as an existing KubeApi."""
        return cls(api.api_client)

    def namespaces(self, selector: str) -> list[str]:
        """Names of the namespaces the label selector picks, less those being deleted (sorted)."""
        items = self._list(self._core.list_namespace, label_selector=selector)
        return sorted(ns.metadata.name for ns in items
                      if not (ns.status is not None and ns.status.phase == "Terminating"))

    def holding(self, bundle_pem: str) -> set[str]:
        """Namespaces whose root-cert ConfigMap already holds exactly this bundle (one list call)."""
        items = self._list(self._core.list_config_map_for_all_namespaces,
                           field_selector=f"metadata.name={ROOT_CERT_CONFIGMAP}")
        return {cm.metadata.namespace for cm in items if _in_sync(cm, bundle_pem)}

    def sync(self, namespace: str, bundle_pem: str) -> SyncOutcome:
        """Bring the namespace's root-cert ConfigMap to `bundle_pem`, retrying on 409 Conflict."""
        for attempt in range(self._attempts):
            current = self._read(namespace)
            try:
                if current is None:
                    self._create(namespace, bundle_pem)
                    return "created"
                if _in_sync(current, bundle_pem):
                    return "unchanged"
                if current.immutable:
                    # An immutable ConfigMap cannot be updated, only replaced: delete exactly the
                    # version that was read (preconditions), then create ours.
                    self._delete(namespace, current)
                    self._create(namespace, bundle_pem, like=current)
                else:
                    self._call(self._core.replace_namespaced_config_map, name=ROOT_CERT_CONFIGMAP,
                               namespace=namespace, body=_updated(current, bundle_pem),
                               _request_timeout=_TIMEOUT)
                return "updated"
            except KubeApiError as exc:
                # 409: AlreadyExists on create, Conflict on update or on a delete precondition.
                # Someone else wrote in between; read again and decide again.
                if exc.status != 409 or attempt + 1 == self._attempts:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # ----------------------------------------------------------------- requests

    def _read(self, namespace: str) -> Any:
        try:
            return self._call(self._core.read_namespaced_config_map, name=ROOT_CERT_CONFIGMAP,
                              namespace=namespace, _request_timeout=_TIMEOUT)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    def _create(self, namespace: str, bundle_pem: str, *, like: Any = None) -> None:
        labels = dict((like.metadata.labels or {}) if like is not None else {})
        labels[MANAGED_BY_LABEL] = MANAGED_BY
        data = dict((like.data or {}) if like is not None else {})
        data[ROOT_CERT_KEY] = bundle_pem
        binary = {k: v for k, v in ((like.binary_data or {}) if like is not None else {}).items()
                  if k != ROOT_CERT_KEY}
        body = k8s.V1ConfigMap(
            api_version="v1", kind="ConfigMap",
            metadata=k8s.V1ObjectMeta(
                name=ROOT_CERT_CONFIGMAP, namespace=namespace, labels=labels,
                annotations=(like.metadata.annotations if like is not None else None),
            ),
            data=data,
            binary_data=binary or None,
        )
        self._call(self._core.create_namespaced_config_map, namespace=namespace, body=body,
                   _request_timeout=_TIMEOUT)

    def _delete(self, namespace: str, current: Any) -> None:
        preconditions = k8s.V1Preconditions(uid=current.metadata.uid,
                                            resource_version=current.metadata.resource_version)
        try:
            self._call(self._core.delete_namespaced_config_map, name=ROOT_CERT_CONFIGMAP,
                       namespace=namespace, body=k8s.V1DeleteOptions(preconditions=preconditions),
                       _request_timeout=_TIMEOUT)
        except KubeApiError as exc:
            if exc.status != 404:  # already gone: create it
                raise

    def _list(self, method: Callable[..., Any], **kwargs: Any) -> list[Any]:
        """Every page of a list, as client-go's pager asks: the first page may come from the API
        server's watch cache (resourceVersion=0), later pages follow the continue token alone."""
        items: list[Any] = []
        token: str | None = None
        while True:
            paging: dict[str, Any] = {"_continue": token} if token else {"resource_version": "0"}
            page = self._call(method, limit=_PAGE, _request_timeout=_TIMEOUT, **paging, **kwargs)
            items.extend(page.items or [])
            token = page.metadata._continue if page.metadata is not None else None
            if not token:
                return items

    @staticmethod
    def _call(method: Callable[..., T], **kwargs: Any) -> T:
        try:
            return method(**kwargs)
        except ApiException as exc:
            raise KubeApiError(_describe(exc), status=exc.status,
                               retry_after=retry_after(exc.headers)) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeApiError(f"Kubernetes API not reachable: {type(exc).__name__}") from None


def _in_sync(cm: Any, bundle_pem: str) -> bool:
    labels = (cm.metadata.labels if cm.metadata is not None else None) or {}
    return (
        (cm.data or {}).get(ROOT_CERT_KEY) == bundle_pem
        and ROOT_CERT_KEY not in (cm.binary_data or {})
        and labels.get(MANAGED_BY_LABEL) == MANAGED_BY
    )


def _updated(current: Any, bundle_pem: str) -> Any:
    """The ConfigMap that was read, with meshca's key and label set; its resourceVersion stays,
    which makes the replace conditional on nobody having written since."""
    body = current.model_copy(deep=True)
    body.data = {**(current.data or {}), ROOT_CERT_KEY: bundle_pem}
    binary = {k: v for k, v in (current.binary_data or {}).items() if k != ROOT_CERT_KEY}
    body.binary_data = binary or None
    body.metadata.labels = {**(current.metadata.labels or {}), MANAGED_BY_LABEL: MANAGED_BY}
    body.metadata.managed_fields = None  # left out, the API server keeps the ones it has
    return body


def _describe(exc: ApiException) -> str:
    message = ""
    try:
        status = json.loads(exc.body or "")
        if isinstance(status, dict) and isinstance(status.get("message"), str):
            message = status["message"]
    except (ValueError, TypeError):
        pass
    answer = f"Kubernetes API answered {exc.status} {exc.reason}"
    return f"{answer}: {message}" if message else answer

