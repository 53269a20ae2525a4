"""Which workload a sidecar's token speaks for, in which cluster, and whom it may act for.

- The `clusterid` metadata picks the cluster whose API server and issuer vouch for the token;
  no `clusterid` means the local cluster, an unknown one is refused.
- With pod binding on, a token bound to a pod is accepted only while that pod exists with
  that uid (looked up through the API, remembered for a few seconds).
- A node agent listed as trusted may ask for another workload's certificate
  (`ImpersonatedIdentity`); when its own token is bound to a node, only for a workload with a
  pod on that node.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from meshca.core.sa_token import ServiceAccount
from meshca.errors import AuthenticationError
from meshca.service.kube_calls import KubeCalls
from meshca.service.ports import KubeApiError
from meshca.service.token_cache import CachingAuthenticator

POD_CACHE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class ClusterAuth:
    name: str
    tokens: CachingAuthenticator
    kube: KubeCalls | None  # None: no API server configured (jwks only, e.g. development)


class WorkloadAuthenticator:
    def __init__(
        self,
        clusters: Mapping[str, ClusterAuth],
        local_cluster: str,
        *,
        verify_pod_binding: bool = False,
        trusted_node_accounts: frozenset[str] = frozenset(),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clusters = dict(clusters)
        self._local = local_cluster
        self._verify_pods = verify_pod_binding
        self._trusted_nodes = trusted_node_accounts
        self._monotonic = monotonic
        self._pods: dict[tuple[str, str, str], tuple[str | None, float]] = {}

    def _cluster(self, cluster_id: str | None) -> ClusterAuth:
        cluster = self._clusters.get(cluster_id or self._local)
        if cluster is None:
            raise AuthenticationError("unknown cluster id", reason="cluster")
        return cluster

    async def authenticate(self, token: str, cluster_id: str | None) -> ServiceAccount:
        cluster = self._cluster(cluster_id)
        account = await cluster.tokens.authenticate(token)
        if self._verify_pods and account.pod_name:
            uid = await self._pod_uid(cluster, account.namespace, account.pod_name)
            if uid is None or (account.pod_uid and uid != account.pod_uid):
                raise AuthenticationError("token is bound to a pod that no longer exists",
                                          reason="pod_binding")
        return account

    async def impersonate(self, caller: ServiceAccount, cluster_id: str | None,
                          namespace: str, name: str) -> ServiceAccount:
        """The workload a trusted node agent asks for, or AuthenticationError."""
        if f"{caller.namespace}/{caller.name}" not in self._trusted_nodes:
            raise AuthenticationError("caller may not use ImpersonatedIdentity to request "
                                      "certificates for other identities",
                                      reason="impersonation")
        if caller.node_name:
            cluster = self._cluster(cluster_id)
            if cluster.kube is None:
                raise AuthenticationError("cannot check pods on the caller's node: no API server",
                                          reason="impersonation")
            calls, node = cluster.kube, caller.node_name
            try:
                pods = await calls.call("pods", lambda: calls.api.pods_on_node(namespace, node))
            except KubeApiError as exc:
                raise AuthenticationError(f"cannot list pods on the caller's node ({exc})",
                                          reason="api_unavailable", cacheable=False) from None
            if not any(p.service_account == name for p in pods):
                raise AuthenticationError("no pod of that identity runs on the caller's node",
                                          reason="impersonation")
        return ServiceAccount(namespace=namespace, name=name, node_name=caller.node_name)

    async def _pod_uid(self, cluster: ClusterAuth, namespace: str, name: str) -> str | None:
        key = (cluster.name, namespace, name)
        now = self._monotonic()
        cached = self._pods.get(key)
        if cached is not None and now < cached[1]:
            return cached[0]
        if cluster.kube is None:
            raise AuthenticationError("pod binding cannot be verified: no API server configured",
                                      reason="pod_binding", cacheable=False)
        calls = cluster.kube
        try:
            pod = await calls.call("pod", lambda: calls.api.pod(namespace, name))
        except KubeApiError as exc:
            raise AuthenticationError(f"cannot look up the token's pod ({exc})",
                                      reason="api_unavailable", cacheable=False) from None
        uid = pod.uid if pod else None
        self._pods[key] = (uid, now + POD_CACHE_SECONDS)
        if len(self._pods) > 100_000:
            self._pods.clear()  # crude bound; entries live seconds anyway
        return uid
