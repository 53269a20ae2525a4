"""`--publish-configmaps`: the trust bundle in `istio-ca-root-cert` of every selected namespace.

Only the replica holding the `bundle-publisher` lease writes, so replicas that reload a new
bundle a few seconds apart never take turns rewriting the ConfigMaps.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import Engine

from meshca.config import Settings
from meshca.infra.db.lease import SqlLeases
from meshca.infra.kube.api import KUBE_THREADS, KubeApi
from meshca.infra.kube.configmaps import RootCertConfigMaps
from meshca.infra.lease_holder import this_process
from meshca.service.bundle_publisher import BundlePublisher
from meshca.service.kube_calls import KubeCalls
from meshca.service.ports import AuthMetrics
from meshca.wiring.ca_runtime import SupervisorCa

log = logging.getLogger("meshca")
PUBLISHER_LEASE = "bundle-publisher"


def start_publishing(settings: Settings, ca: SupervisorCa, metrics: AuthMetrics, engine: Engine,
                     stop: asyncio.Event) -> list[asyncio.Task[None]]:
    selector = settings.publish_configmaps
    if selector is None:
        return []
    if not (settings.kubeconfig or KubeApi.in_cluster()):
        raise ValueError("--publish-configmaps needs a Kubernetes API server: give --kubeconfig "
                         "or run in a pod")
    api = KubeApi.connect(settings.cluster_id, settings.kubeconfig)
    pool = ThreadPoolExecutor(max_workers=KUBE_THREADS // 2, thread_name_prefix="meshca-publish")
    calls = KubeCalls(api, qps=settings.kube_qps, burst=settings.kube_burst, pool=pool,
                      metrics=metrics)
    publisher = BundlePublisher(calls, selector, lambda: ca.reloader.current.bundle.pem,
                                configmaps=RootCertConfigMaps.of(api))
    leases = SqlLeases(engine)
    interval = settings.publish_interval
    identity = this_process()

    async def leader() -> bool:
        ttl = max(interval * 3, timedelta(seconds=30))
        now = ca.clock.now()
        return await asyncio.to_thread(leases.acquire, PUBLISHER_LEASE, identity, ttl, now) is not None

    last_pem = [ca.reloader.current.bundle.pem]

    def on_change(_: object) -> None:
        pem = ca.reloader.current.bundle.pem
        if pem != last_pem[0]:
            last_pem[0] = pem
            publisher.wake()

    ca.reloader.add_listener(on_change)
    log.info("publishing the trust bundle to ConfigMap istio-ca-root-cert in namespaces "
             "selected by %r", selector)
    loop = asyncio.get_running_loop()
    return [loop.create_task(publisher.run(stop, interval.total_seconds(), leader))]
