"""Each worker's authorization side: its policy set, kept in step, and the ext_authz server."""

from __future__ import annotations

import asyncio

import grpc
from sqlalchemy import Engine

from meshca.authz import MeshConfig
from meshca.config import Settings
from meshca.infra.db.inventory import SqlInventory
from meshca.infra.db.policies import SqlPolicies
from meshca.infra.kube.api import KubeApi
from meshca.infra.kube.policies import AuthorizationPolicies
from meshca.service.kube_policies import watch_kube_policies
from meshca.service.policy_store import PolicyStore, watch_policy_dir
from meshca.service.policy_sync import follow_stored_policies, load_stored
from meshca.transport.ext_authz.identity import InventoryIdentityCheck
from meshca.transport.ext_authz.server import start_ext_authz


async def start_authorization(settings: Settings, engine: Engine, stopping: asyncio.Event,
                              tasks: list[asyncio.Task[None]],
                              ) -> tuple[PolicyStore, grpc.Server | None]:
    store = PolicyStore(MeshConfig(root_namespace=settings.authz_root_namespace,
                                   trust_domain=settings.trust_domain))
    stored = SqlPolicies(engine)
    await asyncio.to_thread(load_stored, store, stored)  # enforce stored policies from the start
    loop = asyncio.get_running_loop()
    interval = settings.ca_reload_interval.total_seconds()
    tasks.append(loop.create_task(follow_stored_policies(store, stored, stopping, interval)))
    if settings.policy_dir is not None:
        tasks.append(loop.create_task(watch_policy_dir(store, settings.policy_dir, stopping)))
    if settings.watch_kube_policies:
        if not (settings.kubeconfig or KubeApi.in_cluster()):
            raise ValueError("--watch-kube-policies needs a Kubernetes API server: give "
                             "--kubeconfig or run in a pod")
        objects = AuthorizationPolicies.of(KubeApi.connect(settings.cluster_id, settings.kubeconfig))
        tasks.append(loop.create_task(watch_kube_policies(store, objects, stopping)))
    server = None
    if settings.ext_authz_addr is not None:
        server, _ = start_ext_authz(settings.ext_authz_addr, store,
                                          InventoryIdentityCheck(SqlInventory(engine)))
    return store, server
