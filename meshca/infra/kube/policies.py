"""Istio AuthorizationPolicy objects of every namespace: list and watch, through the official client.

The objects are custom resources, so the client hands them over as plain dicts, exactly as the
API server sent them. `list()` gives the resourceVersion a `watch()` resumes from; a watch
whose resourceVersion the server no longer keeps fails with WatchExpired (410 Gone, whether
the server answers the request with 410 or, as its watch cache does, sends an ERROR event
with a 410 Status), and the caller must list again.

Every call blocks (run them in a thread); failures become KubeApiError.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from meshca.infra.kube.api import KubeApi, retry_after
from meshca.service.kube_policies import WatchExpired
from meshca.service.ports import KubeApiError

GROUP = "security.istio.io"
VERSION = "v1"
PLURAL = "authorizationpolicies"

_TIMEOUT = (3.0, 10.0)  # connect, read
_PAGE = 500  # objects per list request
_READ_MARGIN = 15.0  # a watch's read timeout beyond its timeoutSeconds: a dead connection shows

T = TypeVar("T")


class AuthorizationPolicies:
    """The source `watch_kube_policies` reads (its PolicyObjects port). One watch at a time."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self._custom = k8s.CustomObjectsApi(api_client)
        self._lock = threading.Lock()
        self._watch: k8s_watch.Watch | None = None

    @classmethod
    def of(cls, api: KubeApi) -> AuthorizationPolicies:
        """Through the same client (and connection pool) as an existing KubeApi."""
        return cls(api.api_client)

    def list(self) -> tuple[str, list[dict[str, Any]]]:
        """(the list's resourceVersion, every object), all pages of one consistent snapshot."""
        items: list[dict[str, Any]] = []
        version = ""
        token: str | None = None
        while True:
            paging: dict[str, Any] = {"_continue": token} if token else {}
            page = _call(self._custom.list_cluster_custom_object, group=GROUP, version=VERSION,
                         plural=PLURAL, limit=_PAGE, _request_timeout=_TIMEOUT, **paging)
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise KubeApiError(f"listing {PLURAL} did not return a list")
            items.extend(i for i in page["items"] if isinstance(i, dict))
            metadata = page.get("metadata") or {}
            version = version or str(metadata.get("resourceVersion") or "")
            token = metadata.get("continue") or None
            if not token:
                if not version:
                    raise KubeApiError(f"listing {PLURAL} returned no resourceVersion")
                return version, items

    def watch(self, resource_version: str, timeout_seconds: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, object) events after `resource_version` until the server ends the watch after
        `timeout_seconds`: ADDED, MODIFIED, DELETED and BOOKMARK (its object carries only the
        resourceVersion to resume from)."""
        watcher = k8s_watch.Watch()
        with self._lock:
            self._watch = watcher
        stream = watcher.stream(
            self._custom.list_cluster_custom_object, GROUP, VERSION, PLURAL,
            resource_version=resource_version, allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds,  # also stops the client's own retry after a 410
            _request_timeout=(_TIMEOUT[0], timeout_seconds + _READ_MARGIN),
        )
        try:
            while True:
                event = _call(next, stream, None)
                if event is None:
                    return
                kind, obj = event.get("type"), event.get("raw_object")
                if isinstance(kind, str) and isinstance(obj, dict):
                    yield kind, obj
        finally:
            with self._lock:
                if self._watch is watcher:
                    self._watch = None
            stream.close()

    def interrupt(self) -> None:
        """End the current watch from another thread: its blocked read returns at once."""
        with self._lock:
            watcher = self._watch
        if watcher is not None:
            watcher.stop()


def _call(method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return method(*args, **kwargs)
    except ApiException as exc:
        if exc.status == 410:
            raise WatchExpired(f"resourceVersion expired: {exc.reason}") from None
        raise KubeApiError(f"Kubernetes API answered {exc.status} {exc.reason}", status=exc.status,
                           retry_after=retry_after(exc.headers)) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubeApiError(f"Kubernetes API not reachable: {type(exc).__name__}") from None
