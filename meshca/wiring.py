"""Composition root: the only module that knows every concrete class.

`serve` prepares the data dir, database and CA once, then runs `--workers` identical
worker processes (this one included). Each worker has its own gRPC server, TLS front,
database connections and certificate log, and accepts on the same port through
SO_REUSEPORT, so issuance scales across cores instead of sharing one Python interpreter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import Mapping, MutableSequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from meshca.config import Settings, split_host_port
from meshca.core.authority import SigningAuthority
from meshca.core.clock import Clock, SystemClock
from meshca.core.jwt import VerificationKey
from meshca.core.lifetime import LifetimePolicy
from meshca.core.sa_token import TokenRules
from meshca.gen.istio.v1.auth import ca_pb2, ca_pb2_grpc
from meshca.infra.db.ca_repository import SqlCaRepository
from meshca.infra.db.engine import database_url_for, migrate, open_engine
from meshca.infra.db.records import SqlCertificateLog
from meshca.infra.dev_issuer import DEV_ISSUER, DevIssuer
from meshca.infra.jwks_source import load_jwks
from meshca.infra.keyfiles import FileKeyStore, private_key_pem, write_private_file
from meshca.service.authentication import JwksTokenAuthenticator
from meshca.service.ca_setup import CaProfile, ensure_signing_authority, load_signing_authority
from meshca.service.issuance import IssuanceService
from meshca.service.serving_cert import issue_serving_certificate
from meshca.transport.grpc.ca_service import IstioCertificateServicer
from meshca.transport.metrics import CaMetrics, CaMetricsCollector, shared_slots
from meshca.transport.tls_front import PeerCertificates, TlsFront, server_ssl_context

log = logging.getLogger("meshca")
CA_SERVICE = ca_pb2.DESCRIPTOR.services_by_name["IstioCertificateService"].full_name
MAX_MESSAGE_BYTES = 256 * 1024
# Headers carry the bearer token; grpc's 8 KiB default would refuse long tokens before
# meshca's own 16 KiB token limit gets to answer with UNAUTHENTICATED.
MAX_METADATA_BYTES = 64 * 1024
ENDPOINTS_FILE = "endpoints.json"
_WORKER_START_SECONDS = 60


def prepare_data_dir(data_dir: Path) -> None:
    # Everything meshca creates is private unless it says otherwise (the bundle is 0644).
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)


def _database_url(settings: Settings) -> str:
    return settings.database_url or database_url_for(settings.data_dir)


def _tls_files(settings: Settings) -> tuple[Path, Path]:
    tls_dir = settings.data_dir / "tls"
    return tls_dir / "grpc-chain.pem", tls_dir / "grpc-key.pem"


def token_authenticator(settings: Settings, clock: Clock) -> JwksTokenAuthenticator:
    keys: Mapping[str, VerificationKey]
    if settings.token_issuer is None:
        keys = DevIssuer.load_or_create(settings.data_dir).public_keys()
        issuer = DEV_ISSUER
    else:
        if settings.token_jwks is None:
            raise SystemExit("--token-issuer needs --token-jwks (a file or URL of the issuer's keys)")
        keys = load_jwks(settings.token_jwks)
        issuer = settings.token_issuer
    rules = TokenRules(
        issuer=issuer,
        audiences=frozenset(settings.token_audiences),
        skew_seconds=int(settings.token_skew.total_seconds()),
    )
    return JwksTokenAuthenticator(rules, lambda: keys, clock)


def _warn_if_development_issuer(settings: Settings) -> None:
    if settings.token_issuer is None:
        log.warning(
            "\n%s\nDEVELOPMENT TOKEN ISSUER IN USE: no --token-issuer was given, so meshca trusts\n"
            "tokens signed by the key in %s. Anyone who can read that file can\n"
            "mint any identity. Configure --token-issuer and --token-jwks for production.\n%s",
            "!" * 78, settings.data_dir / "dev-token-issuer.key", "!" * 78,
        )


def write_bundle(settings: Settings, authority: SigningAuthority) -> None:
    path = settings.bundle_path
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(authority.bundle.pem)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def prepare(settings: Settings, clock: Clock) -> SigningAuthority:
    """Once per start, before any worker: schema, CA, bundle file, serving certificate."""
    prepare_data_dir(settings.data_dir)
    engine = open_engine(_database_url(settings))
    try:
        migrate(engine)
        profile = CaProfile(
            key_type=settings.ca_key_type,
            trust_domain=settings.trust_domain,
            organization=settings.ca_organization,
            root_ttl=settings.root_ttl,
            intermediate_ttl=settings.intermediate_ttl,
            intermediate_min_remaining=settings.max_ttl * 2,
        )
        authority = ensure_signing_authority(
            SqlCaRepository(engine), FileKeyStore(settings.data_dir), profile, clock
        )
    finally:
        engine.dispose()
    write_bundle(settings, authority)
    token_authenticator(settings, clock)  # fail now, once, on a bad issuer configuration
    _warn_if_development_issuer(settings)
    grpc_host, _ = split_host_port(settings.grpc_addr)
    serving = issue_serving_certificate(
        authority, [*settings.server_dns_names, grpc_host], settings.trust_domain, clock
    )
    chain_file, key_file = _tls_files(settings)
    write_private_file(key_file, private_key_pem(serving.key))
    write_private_file(chain_file, serving.chain_pem.encode())
    return authority


def listen_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


@dataclass
class Worker:
    """One process's serving stack; `stop` shuts it down gracefully."""

    front: TlsFront
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    records: SqlCertificateLog
    dispose: contextlib.ExitStack

    async def stop(self) -> None:
        await self.health.enter_graceful_shutdown()
        await self.front.stop()
        await self.server.stop(grace=5)
        self.records.close()
        self.dispose.close()


async def start_worker(
    settings: Settings, sock: socket.socket, slots: MutableSequence[float], row: int
) -> Worker:
    clock = SystemClock()
    engine = open_engine(_database_url(settings))
    cleanup = contextlib.ExitStack()
    cleanup.callback(engine.dispose)
    authority = load_signing_authority(SqlCaRepository(engine), FileKeyStore(settings.data_dir))
    records = SqlCertificateLog(engine)
    issuance = IssuanceService(
        trust_domain=settings.trust_domain,
        authenticator=token_authenticator(settings, clock),
        authority=lambda: authority,
        lifetimes=LifetimePolicy(settings.default_ttl, settings.max_ttl, settings.backdate),
        certificate_log=records,
        audit=records,
        clock=clock,
    )
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        ]
    )
    peers = PeerCertificates()
    ca_pb2_grpc.add_IstioCertificateServiceServicer_to_server(
        IstioCertificateServicer(issuance, CaMetrics(slots, row), peers), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (CA_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME),
        server,
    )
    upstream_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    chain_file, key_file = _tls_files(settings)
    front = TlsFront(
        upstream_port,
        lambda: server_ssl_context(str(chain_file), str(key_file), authority.bundle.pem),
        peers,
    )
    await front.start(sock)
    for service in ("", CA_SERVICE):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return Worker(front, server, health_servicer, records, cleanup)


def _child_main(settings: Settings, host: str, port: int, slots: MutableSequence[float], row: int,
                ready: ProcessEvent) -> None:
    """Entry point of worker processes 1..N-1 (spawned, so nothing is inherited by fork)."""
    logging.basicConfig(level=settings.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s %(name)s[w{row}]: %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        worker = await start_worker(settings, listen_socket(host, port, True), slots, row)
        ready.set()
        await stop.wait()
        await worker.stop()

    asyncio.run(run())


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set or SIGTERM/SIGINT arrives."""
    clock = SystemClock()
    authority = prepare(settings, clock)
    workers = settings.workers
    grpc_host, grpc_port = split_host_port(settings.grpc_addr)
    sock = listen_socket(grpc_host, grpc_port, reuse_port=workers > 1)
    bound_port = int(sock.getsockname()[1])
    slots = shared_slots(workers)

    context = multiprocessing.get_context("spawn")
    children: list[tuple[BaseProcess, ProcessEvent]] = []
    for row in range(1, workers):
        ready = context.Event()
        process: BaseProcess = context.Process(
            target=_child_main, args=(settings, grpc_host, bound_port, slots, row, ready),
            name=f"meshca-worker-{row}", daemon=True,
        )
        process.start()
        children.append((process, ready))
    worker = await start_worker(settings, sock, slots, 0)
    loop = asyncio.get_running_loop()
    for child, ready in children:
        if not await loop.run_in_executor(None, ready.wait, _WORKER_START_SECONDS):
            raise SystemExit(f"{child.name} did not start (exit code {child.exitcode})")

    registry = CollectorRegistry()
    collector = CaMetricsCollector(slots, workers, registry)
    collector.root_expiry = min(r.not_valid_after_utc for r in authority.bundle.roots).timestamp()
    metrics_host, metrics_port = split_host_port(settings.metrics_addr)
    metrics_server, _ = start_http_server(metrics_port, metrics_host, registry=registry)

    endpoints = {"grpc": f"{grpc_host}:{bound_port}",
                 "metrics": f"{metrics_host}:{metrics_server.server_port}", "pid": os.getpid()}
    (settings.data_dir / ENDPOINTS_FILE).write_text(json.dumps(endpoints))
    log.info("meshca serving CreateCertificate on %s (TLS, %d worker%s), metrics on %s, "
             "trust domain %s", endpoints["grpc"], workers, "s" * (workers > 1),
             endpoints["metrics"], settings.trust_domain)

    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = loop.create_task(_watch_children(children, stop))
    await stop.wait()
    log.info("meshca stopping")
    watcher.cancel()
    for child, _ in children:
        if child.is_alive():
            child.terminate()
    await worker.stop()
    for child, _ in children:
        await loop.run_in_executor(None, child.join, 10)
        if child.is_alive():
            child.kill()
    metrics_server.shutdown()
    if watcher.done() and not watcher.cancelled() and watcher.result():
        raise SystemExit(1)


async def _watch_children(children: list[tuple[BaseProcess, ProcessEvent]],
                          stop: asyncio.Event) -> bool:
    """A worker that dies takes the server down, so that its supervisor restarts it whole."""
    while not stop.is_set():
        for child, _ in children:
            if not child.is_alive():
                log.error("%s exited with code %s; stopping meshca", child.name, child.exitcode)
                stop.set()
                return True
        await asyncio.sleep(0.5)
    return False
