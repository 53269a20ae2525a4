"""Building token authentication from settings: clusters, key sources, validators, caches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from meshca.config import Settings
from meshca.infra.dev_issuer import DEV_ISSUER, DevIssuer
from meshca.infra.jwks_source import load_jwks
from meshca.infra.keyfiles import KeyEncryptionKey
from meshca.infra.kube.api import KUBE_THREADS, KubeApi
from meshca.infra.oidc import https_discovery, kube_discovery
from meshca.service.key_sources import DiscoveredKeySource, KeySource, StaticKeySource
from meshca.service.kube_calls import KubeCalls
from meshca.service.ports import AuthMetrics
from meshca.service.token_cache import CacheSettings, CachingAuthenticator
from meshca.service.token_validation import (
    BothValidator,
    JwksValidator,
    TokenReviewValidator,
    TokenValidator,
)
from meshca.service.workload_auth import ClusterAuth, WorkloadAuthenticator


@dataclass
class TokenAuthentication:
    """Everything one worker uses to authenticate tokens, and what it must keep running."""

    workloads: WorkloadAuthenticator
    admin_tokens: CachingAuthenticator  # the local cluster's tokens, with the admin audiences
    background: list[Coroutine[Any, Any, None]] = field(default_factory=list)


@dataclass
class _Cluster:
    name: str
    kube: KubeCalls | None
    keys: KeySource | None


def uses_development_issuer(settings: Settings) -> bool:
    return (settings.token_issuer is None and settings.kubeconfig is None
            and not KubeApi.in_cluster())


def build_token_authentication(settings: Settings, metrics: AuthMetrics,
                               stop: asyncio.Event, kek: KeyEncryptionKey) -> TokenAuthentication:
    """Raises SystemExit with a message when the settings cannot work together; `kek` opens
    the development issuer's key."""
    pool = ThreadPoolExecutor(max_workers=KUBE_THREADS, thread_name_prefix="meshca-kube")
    # The API-server budget is shared by all workers of this replica.
    qps = settings.kube_qps / settings.workers
    burst = max(1, settings.kube_burst // settings.workers)
    background: list[Coroutine[Any, Any, None]] = []

    def calls(api: KubeApi) -> KubeCalls:
        return KubeCalls(api, qps=qps, burst=burst, pool=pool, metrics=metrics)

    def discovered(source: DiscoveredKeySource) -> DiscoveredKeySource:
        background.append(source.run(stop))
        return source

    needs_api = settings.token_validation != "jwks" or settings.verify_pod_binding
    local_api: KubeApi | None = None
    if settings.kubeconfig or KubeApi.in_cluster():
        local_api = KubeApi.connect(settings.cluster_id, settings.kubeconfig)
    elif needs_api:
        raise SystemExit("--token-validation tokenreview/both and --verify-pod-binding need a "
                         "Kubernetes API server: give --kubeconfig or run in a pod")

    local_keys: KeySource | None = None
    if settings.token_validation != "tokenreview":
        if uses_development_issuer(settings):
            issuer = DevIssuer.load_or_create(settings.data_dir, kek)
            local_keys = StaticKeySource(DEV_ISSUER, issuer.public_keys())
        elif settings.token_issuer and settings.token_jwks:
            local_keys = StaticKeySource(settings.token_issuer, load_jwks(settings.token_jwks))
        elif settings.token_issuer:
            issuer_url, ca = settings.token_issuer, settings.token_issuer_ca
            local_keys = discovered(DiscoveredKeySource(
                lambda: https_discovery(issuer_url, ca), expected_issuer=issuer_url))
        else:
            assert local_api is not None
            api = local_api
            local_keys = discovered(DiscoveredKeySource(lambda: kube_discovery(api)))

    clusters = [_Cluster(settings.cluster_id, calls(local_api) if local_api else None, local_keys)]
    for name, kubeconfig in settings.clusters:
        remote = KubeApi.connect(name, kubeconfig)
        keys = None
        if settings.token_validation != "tokenreview":
            keys = discovered(DiscoveredKeySource(partial(kube_discovery, remote)))
        clusters.append(_Cluster(name, calls(remote), keys))

    cache = CacheSettings(
        ttl_seconds=settings.token_cache_ttl.total_seconds(),
        max_entries=settings.token_cache_size,
        negative_ttl_seconds=settings.token_negative_cache_ttl.total_seconds(),
    )

    def authenticator(cluster: _Cluster, audiences: tuple[str, ...]) -> CachingAuthenticator:
        validator = _validator(settings, cluster, audiences)
        return CachingAuthenticator(validator.validate, cache, time.time, metrics)

    workloads = WorkloadAuthenticator(
        {c.name: ClusterAuth(c.name, authenticator(c, settings.token_audiences), c.kube)
         for c in clusters},
        settings.cluster_id,
        verify_pod_binding=settings.verify_pod_binding,
        trusted_node_accounts=frozenset(settings.trusted_node_accounts),
    )
    return TokenAuthentication(
        workloads, authenticator(clusters[0], settings.admin_token_audiences), background)


def _validator(settings: Settings, cluster: _Cluster, audiences: tuple[str, ...]) -> TokenValidator:
    skew = int(settings.token_skew.total_seconds())
    local = JwksValidator(cluster.keys, frozenset(audiences), skew) if cluster.keys else None
    remote = TokenReviewValidator(cluster.kube, list(audiences)) if cluster.kube else None
    if settings.token_validation == "jwks":
        assert local is not None
        return local
    assert remote is not None
    if settings.token_validation == "tokenreview":
        return remote
    assert local is not None
    return BothValidator(local, remote)
