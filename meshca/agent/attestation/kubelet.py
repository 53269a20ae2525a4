"""The kubelet's pod list (`GET /pods` on its authenticated port, 10250), as a `PodSource`.

Authenticated with the agent's token for the API server's audience (`--kubelet-token-file`,
re-read on every call: a projected token rotates), verified against `--kubelet-ca` unless
`--kubelet-insecure` says otherwise. The body is a v1 `PodList`. Plain `http.client`, so no
redirect can carry the token elsewhere.
Every failure is a DependencyError whose message names the kubelet, never the token.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from meshca.agent.attestation.ports import PodInfo
from meshca.errors import ConfigurationError, DependencyError

DEFAULT_URL = "https://127.0.0.1:10250/pods"
# A node's pod list is a few MB at most (110 pods by default); anything bigger is not one.
_MAX_BODY = 32 * 1024 * 1024
_CHUNK = 64 * 1024


class KubeletError(DependencyError):
    """The kubelet could not be asked, refused the agent, or answered something not a PodList."""


def token_from_file(path: str | Path) -> Callable[[], str]:
    """A token source that reads `path` at each call (projected tokens are rewritten)."""

    def read() -> str:
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise KubeletError(f"cannot read the agent's token file {path}: {exc.strerror}") from exc
        if not token:
            raise KubeletError(f"the agent's token file {path} is empty")
        return token

    return read


class KubeletPods:
    """`PodSource` over the kubelet's `/pods`. `timeout` bounds the whole exchange."""

    def __init__(
        self,
        token: Callable[[], str],
        *,
        url: str = DEFAULT_URL,
        ca_file: str | Path | None = None,
        insecure: bool = False,
        timeout: float = 5.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ConfigurationError(f"--kubelet-url must be an https:// URL, not {url!r}")
        if ca_file is not None and insecure:
            raise ConfigurationError("give the kubelet's CA (--kubelet-ca) or --kubelet-insecure, not both")
        if ca_file is None and not insecure:
            raise ConfigurationError("the kubelet's CA is needed: --kubelet-ca, or --kubelet-insecure")
        if timeout <= 0:
            raise ConfigurationError("the kubelet timeout must be positive")
        self._host, self._port = parts.hostname, parts.port or 443
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._token = token
        self._timeout = timeout
        self._context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
        if insecure:
            self._context.check_hostname = False
            self._context.verify_mode = ssl.CERT_NONE

    def pod(self, uid: str) -> PodInfo | None:
        for pod in self.pods():
            if pod.uid == uid:
                return pod
        return None

    def pods(self) -> list[PodInfo]:
        return pods_from_list(self._fetch())

    def _fetch(self) -> Any:
        deadline = time.monotonic() + self._timeout
        token = self._token()
        conn = http.client.HTTPSConnection(self._host, self._port, context=self._context,
                                           timeout=self._timeout)
        try:
            conn.request("GET", self._path, headers={
                "Authorization": f"Bearer {token}", "Accept": "application/json",
            })
            response = conn.getresponse()
            body = _read_bounded(response, deadline)
        except (OSError, http.client.HTTPException) as exc:
            raise KubeletError(f"the kubelet at {self._host}:{self._port} cannot be asked for pods: "
                               f"{type(exc).__name__}: {exc}") from exc
        finally:
            conn.close()
        if response.status in (401, 403):
            raise KubeletError(f"the kubelet refused the agent's token (HTTP {response.status}); "
                               "the agent's service account needs nodes/proxy get")
        if response.status != 200:
            raise KubeletError(f"the kubelet answered /pods with HTTP {response.status}")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise KubeletError("the kubelet's /pods answer is not JSON") from exc


def _read_bounded(response: http.client.HTTPResponse, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read(_CHUNK):
        size += len(chunk)
        if size > _MAX_BODY:
            raise http.client.HTTPException(f"pod list over {_MAX_BODY} bytes")
        if time.monotonic() > deadline:
            raise TimeoutError("the pod list took longer than the timeout")
        chunks.append(chunk)
    return b"".join(chunks)


def pods_from_list(doc: Any) -> list[PodInfo]:
    """The pods of a v1 PodList. Raises KubeletError if `doc` is not one; skips items that lack
    a name, namespace, uid or service account (no identity can come from them)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise KubeletError("the kubelet's /pods answer is not a PodList")
    pods = []
    for item in doc["items"]:
        if not isinstance(item, dict):
            continue
        meta, spec, status = (_obj(item, k) for k in ("metadata", "spec", "status"))
        name, namespace, uid = (meta.get(k) for k in ("name", "namespace", "uid"))
        if not (isinstance(name, str) and isinstance(namespace, str) and isinstance(uid, str)):
            continue
        if not (name and namespace and uid):
            continue
        # The API server always sets it; a pod without one (a static pod) gets no identity
        # rather than a guessed "default".
        account = spec.get("serviceAccountName")
        if not isinstance(account, str) or not account:
            continue
        ids = frozenset(_container_ids(
            status.get(k) for k in ("containerStatuses", "initContainerStatuses",
                                    "ephemeralContainerStatuses")
        ))
        pods.append(PodInfo(namespace, account, name, uid, ids))
    return pods


def _obj(item: dict[str, Any], key: str) -> dict[str, Any]:
    value = item.get(key)
    return value if isinstance(value, dict) else {}


def _container_ids(lists: Iterable[Any]) -> Iterable[str]:
    for statuses in lists:
        if not isinstance(statuses, list):
            continue
        for status in statuses:
            cid = status.get("containerID") if isinstance(status, dict) else None
            # `<runtime>://<id>`: containerd://, cri-o://, docker://
            if isinstance(cid, str) and "://" in cid:
                bare = cid.split("://", 1)[1]
                if bare:
                    yield bare
