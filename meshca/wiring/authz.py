"""Each worker's authorization side: its policy set, kept in step, and the ext_authz server
with its identity snapshot refreshed in the background."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import grpc
from sqlalchemy import Engine

from meshca.authz import MeshConfig
from meshca.config import Settings
from meshca.infra.db.inventory import SqlInventory
from meshca.infra.db.policies import SqlPolicies
from meshca.infra.keyfiles import KeyEncryptionKey
from meshca.infra.kube.api import KubeApi
from meshca.infra.kube.policies import AuthorizationPolicies
from meshca.service.ca_reload import CaReloader
from meshca.service.kube_policies import watch_kube_policies
from meshca.service.policy_store import PolicyStore, watch_policy_dir
from meshca.service.policy_sync import follow_stored_policies, load_stored
from meshca.transport.ext_authz.identity import IdentityState, SnapshotIdentityCheck, state_from
from meshca.transport.ext_authz.reasons import AuthzMetrics, NoMetrics
from meshca.transport.ext_authz.refresher import IdentityRefresher
from meshca.transport.ext_authz.server import start_ext_authz
from meshca.transport.ext_authz.tls import ExtAuthzTls
from meshca.wiring.ca_runtime import serving_file

log = logging.getLogger(__name__)
# How long a worker waits for its first identity snapshot before it serves ext_authz anyway
# (denying every check until one is read).
FIRST_SNAPSHOT_SECONDS = 5.0


async def start_authorization(settings: Settings, engine: Engine, stopping: asyncio.Event,
                              tasks: list[asyncio.Task[None]], *,
                              metrics: AuthzMetrics | None = None,
                              reloader: CaReloader | None = None,
                              kek: KeyEncryptionKey | None = None,
                              ) -> tuple[PolicyStore, grpc.Server | None]:
    """`metrics` counts ext_authz decisions (the worker's CaMetrics); `reloader` (the worker's)
    is needed with --ext-authz-tls, to follow the trust bundle and serving certificate."""
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
        server = await _start_ext_authz(settings, settings.ext_authz_addr, engine, store, stopping,
                                        tasks, metrics or NoMetrics(), reloader, kek)
    return store, server


async def _start_ext_authz(settings: Settings, addr: str, engine: Engine, store: PolicyStore,
                           stopping: asyncio.Event, tasks: list[asyncio.Task[None]],
                           metrics: AuthzMetrics, reloader: CaReloader | None,
                           kek: KeyEncryptionKey | None) -> grpc.Server:
    credentials = None
    if settings.ext_authz_tls:
        if reloader is None or kek is None:
            raise ValueError("--ext-authz-tls needs the worker's CA reloader and KEK")
        tls = ExtAuthzTls(serving_file(settings), kek.tls_password(),
                          reloader.current.bundle.pem)
        reloader.add_listener(lambda current: tls.reload(current.bundle.pem))
        credentials = tls.credentials
    inventory = SqlInventory(engine)

    def read(started: float) -> IdentityState:
        denied = inventory.denied_identities(datetime.now(UTC))
        return state_from(denied.blocked, denied.revoked_serials, denied.tainted_issuers, started)

    refresher = IdentityRefresher(read, settings.ext_authz_refresh.total_seconds(), metrics)
    refresher.start()
    tasks.append(asyncio.get_running_loop().create_task(_stop_with(stopping, refresher)))
    if not await asyncio.to_thread(refresher.wait_first, FIRST_SNAPSHOT_SECONDS):
        log.warning("ext_authz: no identity state read within %gs; checks are denied until one is",
                    FIRST_SNAPSHOT_SECONDS)
    identities = SnapshotIdentityCheck(lambda: refresher.state,
                                       settings.ext_authz_max_staleness.total_seconds())
    server, _ = start_ext_authz(addr, store, identities, metrics=metrics,
                                verbose=settings.ext_authz_verbose, credentials=credentials,
                                options=_listener_options(settings))
    return server


def _listener_options(settings: Settings) -> list[tuple[str, int]]:
    """The listener limits that cannot turn into a failed check (which Envoy's
    failure_mode_allow would decide): connections that stall their handshake or sit idle are
    closed, and Envoy reconnects. No cap on calls or streams: a refused or queued check would
    be such a failure; the NetworkPolicy and mTLS decide who may connect at all."""
    return [("grpc.server_handshake_timeout_ms",
             int(settings.tls_handshake_timeout.total_seconds() * 1000)),
            ("grpc.max_connection_idle_ms",
             int(settings.connection_idle_timeout.total_seconds() * 1000)),
            ("grpc.max_metadata_size", settings.max_header_bytes)]


async def _stop_with(stopping: asyncio.Event, refresher: IdentityRefresher) -> None:
    try:
        await stopping.wait()
    finally:
        refresher.stop()
