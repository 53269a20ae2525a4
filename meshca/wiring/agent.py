"""`meshca agent`: builds the node agent from AgentSettings and runs it until SIGTERM/SIGINT.

The order matters for a restart: the SVID cache starts (and fetches the bundle) before the
sockets listen, so the first workload to call is served as soon as the server answers; the
sockets are replaced atomically (a stale one from the previous run is unlinked, then bound).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

from meshca.agent.attestation.kubelet import KubeletPods, token_from_file
from meshca.agent.attestation.kubernetes import KubernetesAttestor
from meshca.agent.attestation.proc import ProcFs
from meshca.agent.attestation.unix import UnixAttestor, parse_entries
from meshca.agent.bundles import FileBundleSource, HttpBundleSource
from meshca.agent.health import HealthApp
from meshca.agent.identities import AttestedIdentities, Attestor
from meshca.agent.jwt_minter import GrpcJwtMinter
from meshca.agent.jwt_svids import JwtSvidCache
from meshca.agent.metrics import AgentMetrics
from meshca.agent.ports import BundleSource
from meshca.agent.sds import SdsServer
from meshca.agent.server_bundles import GrpcBundleSource
from meshca.agent.server_channel import ServerChannel
from meshca.agent.server_signer import GrpcSigner
from meshca.agent.settings import AgentSettings
from meshca.agent.svid_cache import SvidCache
from meshca.agent.workload_api import WorkloadApiServer
from meshca.core.connection_limits import ConnectionLimits
from meshca.errors import ConfigurationError
from meshca.transport.http_server import HttpServer
from meshca.transport.listen import listen_socket
from meshca.transport.metrics_http import MetricsApp

log = logging.getLogger("meshca.agent")

# Workload streams are idle between renewals; only a day of silence closes one.
STREAM_IDLE_SECONDS = 24 * 3600.0
HEALTH_LIMITS = ConnectionLimits(handshake_timeout=5.0, idle_timeout=30.0, max_connections=64,
                                 max_connections_per_source=16)
HEALTH_MAX_HEADER_BYTES = 16 * 1024
KUBELET_TIMEOUT = 5.0


def build_attestor(settings: AgentSettings) -> Attestor:
    if settings.attestor == "unix":
        entries = parse_entries(settings.workloads, settings.trust_domain)
        for entry in entries:
            if entry.spiffe_id.workload_parts() is None:
                raise ConfigurationError(
                    f"--workload {entry.name}: meshca's server signs only "
                    f"spiffe://{settings.trust_domain}/ns/<namespace>/sa/<service account> IDs")
        return UnixAttestor(entries)
    pods = KubeletPods(token_from_file(settings.kubelet_token_file), url=settings.kubelet_url,
                       ca_file=settings.kubelet_ca, insecure=settings.kubelet_insecure,
                       timeout=KUBELET_TIMEOUT)
    return KubernetesAttestor(settings.trust_domain, ProcFs(settings.proc_root), pods)


def build_bundles(settings: AgentSettings, server: ServerChannel) -> BundleSource:
    source = settings.effective_bundle_source
    if source == "url":
        assert settings.bundle_url is not None
        return HttpBundleSource(settings.bundle_url, settings.server_ca,
                                settings.server_timeout, trust_domain=settings.trust_domain,
                                server_name=settings.server_name)
    from_file = FileBundleSource(settings.server_ca, settings.trust_domain)
    if source == "file":
        return from_file
    return GrpcBundleSource(server, settings.trust_domain, fallback=from_file)


class Agent:
    """Every part of a running agent, started and stopped in order."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.metrics = AgentMetrics()
        identities = AttestedIdentities(
            build_attestor(settings), settings.attestor,
            wait=settings.attestation_wait.total_seconds(), metrics=self.metrics)
        # One channel to the server for signing, minting and bundles.
        self.server = ServerChannel.from_settings(settings, self.metrics)
        self.signer = GrpcSigner.from_channel(self.server)
        self.svids = SvidCache(
            self.signer, build_bundles(settings, self.server), trust_domain=settings.trust_domain,
            key_type=settings.svid_key_type, ttl=settings.svid_ttl, retry_max=settings.retry_max,
            idle_lifetime=settings.idle_svid_lifetime, first_wait=settings.server_timeout,
            metrics=self.metrics)
        limits = ConnectionLimits(idle_timeout=STREAM_IDLE_SECONDS,
                                  max_connections=settings.max_connections,
                                  max_connections_per_source=settings.max_connections_per_uid)
        self.jwt_svids = JwtSvidCache(
            GrpcJwtMinter(self.server), self.svids, trust_domain=settings.trust_domain,
            ttl=settings.jwt_svid_ttl, metrics=self.metrics)
        self.workload_api = WorkloadApiServer(str(settings.socket), identities, self.svids,
                                              limits, jwt_svids=self.jwt_svids,
                                              metrics=self.metrics)
        self.sds = None if settings.sds_socket is None else SdsServer(
            str(settings.sds_socket), identities, self.svids, limits, metrics=self.metrics)
        self.health: HttpServer | None = None
        self.health_address = ""
        self._serving = False

    def not_ready(self) -> Sequence[str]:
        reasons = []
        if not self._serving:
            reasons.append("the workload sockets are not listening yet")
        if not self.svids.ready():
            reasons.append("the trust bundle is not known yet (is the meshca server reachable, "
                           "and --server-ca, --bundle-source or --bundle-url right?)")
        return reasons

    async def start(self) -> None:
        if self.settings.health_addr:
            host, _, port = self.settings.health_addr.rpartition(":")
            sock = listen_socket(host.strip("[]"), int(port), reuse_port=False)
            self.health = HttpServer(
                "agent-health", HealthApp(self.not_ready, MetricsApp(self.metrics.registry)),
                None, HEALTH_LIMITS, max_header_bytes=HEALTH_MAX_HEADER_BYTES)
            bound = sock.getsockname()
            self.health_address = f"{host}:{bound[1]}"
            await self.health.start(sock)
        await self.svids.start()
        await self.workload_api.start()
        if self.sds is not None:
            await self.sds.start()
        self._serving = True

    async def stop(self) -> None:
        self._serving = False
        if self.sds is not None:
            await self.sds.stop()
        await self.workload_api.stop()
        await self.jwt_svids.stop()
        await self.svids.stop()
        await self.server.close()
        if self.health is not None:
            await self.health.stop()


async def run_agent(settings: AgentSettings) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _check_readable(settings.token_file, "--token-file")
    agent = Agent(settings)
    await agent.start()
    log.info("agent ready: Workload API unix://%s, SDS %s, health %s, attestor %s, server %s",
             settings.socket, f"unix://{settings.sds_socket}" if settings.sds_socket else "off",
             f"http://{agent.health_address}" if agent.health_address else "off",
             settings.attestor, settings.server)
    try:
        await stop.wait()
    finally:
        log.info("agent stopping")
        await agent.stop()


def _check_readable(path: Path, flag: str) -> None:
    """The token is re-read on every use; a missing file at start is a mistake worth stopping
    for, unlike one that is briefly absent while the kubelet rewrites it."""
    try:
        path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{flag} {path}: {exc.strerror}") from None
