"""SPIFFE federation in the server: the snapshot every process reads, and in the supervisor
the relationships of `--federate-with`, the fetching loop (one replica, by lease), the admin
use case, the metrics and the bundle endpoint (`--federation-addr`)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from meshca.config import Settings, split_host_port
from meshca.core.authority import SigningAuthority
from meshca.core.clock import Clock
from meshca.core.federation import (
    ENDPOINT_PATH,
    HTTPS_WEB,
    FlagEntry,
    RefreshBounds,
    Relationship,
    roots_from_text,
)
from meshca.errors import MeshcaError
from meshca.infra.db.federation import SqlFederation
from meshca.infra.db.lease import SqlLeases
from meshca.infra.federation_fetch import HttpsBundleFetcher
from meshca.infra.keyfiles import KeyEncryptionKey
from meshca.infra.lease_holder import this_process
from meshca.service.admin.ca import TrustBundleView
from meshca.service.admin.federation import FederationAdmin
from meshca.service.federation_refresh import FederationRefresher
from meshca.service.federation_snapshot import FederationSnapshot
from meshca.transport.federation_endpoint import BundleEndpointApp
from meshca.transport.federation_metrics import OK, FederationCollector
from meshca.transport.http_server import HttpServer
from meshca.transport.listen import listen_socket
from meshca.transport.metrics import CaMetrics
from meshca.wiring.serving import ServingCertKeeper

log = logging.getLogger("meshca")
FILE_POLL_SECONDS = 5.0
RENEW_CHECK_SECONDS = 3600.0


def relationships_from_flags(entries: tuple[FlagEntry, ...]) -> list[Relationship]:
    """The `--federate-with` entries with their files read; ValueError naming a bad file."""
    found = []
    for entry in entries:
        bootstrap = web_ca = None
        if entry.bundle_file:
            bootstrap = roots_from_text(_read(entry.bundle_file, entry.trust_domain))
        if entry.ca_file:
            web_ca = roots_from_text(_read(entry.ca_file, entry.trust_domain))
        found.append(Relationship(
            trust_domain=entry.trust_domain, url=entry.url, profile=entry.profile,
            endpoint_spiffe_id=entry.endpoint_spiffe_id, bootstrap_pem=bootstrap,
            web_ca_pem=web_ca, from_flags=True))
    return found


def _read(path: str, trust_domain: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--federate-with {trust_domain}: cannot read {path}: {exc}") from None


def federation_snapshot(settings: Settings, engine: Engine, stop: asyncio.Event,
                        tasks: list[asyncio.Task[None]]) -> FederationSnapshot:
    """Every process's view of the federated bundles, re-read every --ca-reload-interval."""
    snapshot = FederationSnapshot(SqlFederation(engine), settings.trust_domain)
    try:
        snapshot.refresh()
    except MeshcaError as exc:  # the loop tries again; serving must not wait for it
        log.warning("federation: first read of the stored bundles failed: %s", exc)
    tasks.append(asyncio.get_running_loop().create_task(
        snapshot.run(stop, settings.ca_reload_interval.total_seconds())))
    return snapshot


def readiness_warnings(snapshot: FederationSnapshot) -> Callable[[], list[str]]:
    """/readyz detail: a federated trust domain without a bundle, or whose last fetch failed."""
    def warnings() -> list[str]:
        found = []
        for record in snapshot.records:
            td = record.relationship.trust_domain
            if record.document is None:
                found.append(f"federation {td}: no bundle yet"
                             + (f" ({record.error})" if record.error else ""))
            elif record.outcome not in (None, OK):
                found.append(f"federation {td}: the last fetch failed ({record.error}); "
                             f"keeping the bundle fetched at {record.fetched_at}")
        return found
    return warnings


@dataclass
class SupervisorFederation:
    snapshot: FederationSnapshot
    admin: FederationAdmin
    refresher: FederationRefresher
    collector: FederationCollector
    endpoint: HttpServer | None = None
    endpoint_address: str | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.stop()
        for task in self.tasks:
            task.cancel()


async def start_federation(settings: Settings, engine: Engine, clock: Clock,
                           stop: asyncio.Event, registry: CollectorRegistry,
                           snapshot: FederationSnapshot) -> SupervisorFederation:
    """Flags written, fetching started (it waits for the lease), metrics registered. The
    bundle endpoint is started apart (`start_bundle_endpoint`), once the CA is loaded."""
    store = SqlFederation(engine)
    loop = asyncio.get_running_loop()
    collector = FederationCollector(lambda: snapshot.records, clock.now, registry)
    refresher = FederationRefresher(
        store, SqlLeases(engine), HttpsBundleFetcher(), clock, identity=this_process(),
        bounds=RefreshBounds(settings.federation_refresh_min.total_seconds(),
                             settings.federation_refresh_max.total_seconds()),
        timeout=settings.federation_fetch_timeout, observe=collector.fetched)

    def changed() -> None:  # called from the admin API's threads
        loop.call_soon_threadsafe(refresher.wake)
        loop.call_soon_threadsafe(snapshot.wake)

    admin = FederationAdmin(store, settings.trust_domain, clock, changed)
    relationships = await asyncio.to_thread(relationships_from_flags, settings.federate_with)
    await asyncio.to_thread(admin.sync_flags, relationships)
    await snapshot.refresh_now()
    tick = min(settings.federation_refresh_min.total_seconds(), 5.0)
    runtime = SupervisorFederation(snapshot, admin, refresher, collector)
    runtime.tasks.append(loop.create_task(refresher.run(stop, tick)))
    return runtime


async def start_bundle_endpoint(settings: Settings, runtime: SupervisorFederation,
                                bundle: TrustBundleView, clock: Clock, kek: KeyEncryptionKey,
                                current: Callable[[], SigningAuthority],
                                add_listener: Callable[[Callable[[SigningAuthority], None]], None],
                                metrics: CaMetrics, sock: socket.socket | None = None) -> None:
    """`--federation-addr`: this trust domain's bundle at `GET /` over HTTPS, with meshca's
    own SVID for spiffe://<td>/meshca/federation (https_spiffe, re-issued with the CA like the
    serving certificate) or the operator's certificate files (https_web, reloaded on change)."""
    if settings.federation_addr is None:
        return
    host, port = split_host_port(settings.federation_addr)
    if settings.federation_profile == HTTPS_WEB:
        assert settings.federation_cert is not None and settings.federation_key is not None
        cert, key = str(settings.federation_cert), str(settings.federation_key)
        password: bytes | None = None
    else:
        keeper = ServingCertKeeper(settings.data_dir / "tls" / "federation.pem",
                                   list(dict.fromkeys([*settings.server_dns_names, host])),
                                   settings.trust_domain, clock, kek, spiffe_path=ENDPOINT_PATH)
        keeper.ensure(current())
        cert = key = str(keeper.path)
        password = kek.tls_password()

    server = HttpServer("federation", BundleEndpointApp(bundle.document),
                        lambda: endpoint_ssl_context(cert, key, password),
                        settings.connection_limits, max_header_bytes=settings.max_header_bytes,
                        on_refused=lambda reason: metrics.connection_refused("federation",
                                                                             reason))
    sock = sock or listen_socket(host, port, reuse_port=False)  # taken early by `meshca serve`
    await server.start(sock)
    runtime.endpoint = server
    runtime.endpoint_address = f"{host}:{sock.getsockname()[1]}"
    loop = asyncio.get_running_loop()
    if settings.federation_profile == HTTPS_WEB:
        runtime.tasks.append(loop.create_task(_reload_on_change(server, [cert, key])))
    else:
        def renew(authority: SigningAuthority) -> None:
            if keeper.ensure(authority):
                server.reload()
        add_listener(renew)
        runtime.tasks.append(loop.create_task(_renew_periodically(renew, current)))


def endpoint_ssl_context(cert: str, key: str, password: bytes | None) -> ssl.SSLContext:
    """No client certificate asked for: the spec forbids requiring client authentication."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key, password=password)
    context.set_alpn_protocols(["http/1.1"])
    return context


async def _reload_on_change(server: HttpServer, paths: list[str]) -> None:
    seen = [_stat(p) for p in paths]
    while True:
        await asyncio.sleep(FILE_POLL_SECONDS)
        now = [_stat(p) for p in paths]
        if now != seen:
            try:
                server.reload()
                seen = now
                log.info("federation endpoint: reloaded %s", ", ".join(paths))
            except (OSError, ssl.SSLError) as exc:  # mid-rewrite: keep serving, look again
                log.warning("federation endpoint: cannot load %s yet: %s", ", ".join(paths), exc)


async def _renew_periodically(renew: Callable[[SigningAuthority], None],
                              current: Callable[[], SigningAuthority]) -> None:
    """The SVID is re-issued at 2/3 of its life even when the CA does not change."""
    while True:
        await asyncio.sleep(RENEW_CHECK_SECONDS)
        renew(current())


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size

