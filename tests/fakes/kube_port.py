"""In-memory `KubeApiPort` (service/ports.py): scripted TokenReview verdicts, pods, and
failures with a status and Retry-After, as the real adapter (infra/kube/api.py) reports them.
For the HTTP-level fake of a whole API server, see kube_api.py.

Calls arrive on executor threads (KubeCalls runs them in a pool): `hold(kind)` makes calls of
that kind wait until `release(kind)`, so tests can line up concurrent callers without sleeping.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from meshca.service.ports import KubeApiError, PodInfo, TokenReviewResult

SA_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:{namespace}", "system:authenticated")


def reviewed(namespace: str, name: str, *, pod: PodInfo | None = None, node: str | None = None,
             audiences: tuple[str, ...] = ()) -> TokenReviewResult:
    """What the API server answers for a valid token of namespace/name."""
    extra: dict[str, tuple[str, ...]] = {}
    if pod is not None:
        extra["authentication.kubernetes.io/pod-name"] = (pod.name,)
        extra["authentication.kubernetes.io/pod-uid"] = (pod.uid,)
    if node is not None:
        extra["authentication.kubernetes.io/node-name"] = (node,)
    groups = tuple(g.format(namespace=namespace) for g in SA_GROUPS)
    return TokenReviewResult(True, f"system:serviceaccount:{namespace}:{name}", groups, extra,
                             audiences)


NOT_AUTHENTICATED = TokenReviewResult(False, "", (), error="invalid bearer token")


@dataclass
class _Fault:
    status: int | None
    retry_after: float | None
    remaining: int | None  # None: until cleared


class FakeKubePort:
    def __init__(self, cluster: str = "east") -> None:
        self.cluster = cluster
        self.reviews: dict[str, TokenReviewResult] = {}  # token: verdict (others: not authenticated)
        self.pods: dict[tuple[str, str], PodInfo] = {}
        self.calls: Counter[str] = Counter()  # kind: count ("tokenreview", "pod", "pods", "json")
        self.asked_audiences: list[list[str]] = []
        self._faults: dict[str, _Fault] = {}
        self._gates: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.waiting: Counter[str] = Counter()  # calls held at a gate right now

    # ---- steering (not part of the port) ------------------------------------------------

    def add_pod(self, namespace: str, name: str, *, service_account: str, node: str = "n1",
                uid: str | None = None) -> PodInfo:
        pod = PodInfo(name, namespace, uid or f"uid-{namespace}-{name}-{len(self.pods)}",
                      service_account, node)
        self.pods[(namespace, name)] = pod
        return pod

    def delete_pod(self, namespace: str, name: str) -> None:
        del self.pods[(namespace, name)]

    def fail(self, kind: str, status: int | None = 503, *, times: int | None = None,
             retry_after: float | None = None) -> None:
        """Calls of `kind` raise KubeApiError(status) — the next `times` of them, or all."""
        self._faults[kind] = _Fault(status, retry_after, times)

    def clear_faults(self) -> None:
        self._faults.clear()

    def hold(self, kind: str) -> None:
        self._gates[kind] = threading.Event()

    def release(self, kind: str) -> None:
        self._gates.pop(kind).set()

    # ---- KubeApiPort --------------------------------------------------------------------

    def token_review(self, token: str, audiences: list[str]) -> TokenReviewResult:
        self._enter("tokenreview")
        self.asked_audiences.append(list(audiences))
        return self.reviews.get(token, NOT_AUTHENTICATED)

    def pod(self, namespace: str, name: str) -> PodInfo | None:
        self._enter("pod")
        return self.pods.get((namespace, name))

    def pods_on_node(self, namespace: str, node: str) -> list[PodInfo]:
        self._enter("pods")
        return [p for p in self.pods.values() if p.namespace == namespace and p.node_name == node]

    def get_json(self, path: str) -> dict[str, Any]:
        self._enter("json")
        return {}

    def _enter(self, kind: str) -> None:
        with self._lock:
            self.calls[kind] += 1
            gate = self._gates.get(kind)
            if gate is not None:
                self.waiting[kind] += 1
        if gate is not None:
            gate.wait(timeout=30)
            with self._lock:
                self.waiting[kind] -= 1
        with self._lock:
            fault = self._faults.get(kind)
            if fault is None:
                return
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._faults[kind]
        raise KubeApiError(f"{kind}: the API server answered {fault.status}", fault.status,
                           fault.retry_after)
