"""The supervisor: prepare once, start workers, serve metrics and the admin API, stop."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import multiprocessing
import os
import signal
import socket
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as ProcessEvent

from prometheus_client import CollectorRegistry

from meshca.config import ENDPOINTS_FILE, Settings, split_host_port
from meshca.core.authority import SigningAuthority
from meshca.core.clock import SystemClock
from meshca.infra.db.ca_repository import SqlCaRepository
from meshca.infra.db.engine import open_engine
from meshca.transport.ca_metrics import CaStateCollector
from meshca.transport.http_server import HttpServer
from meshca.transport.metrics import CaMetrics, CaMetricsCollector, shared_slots
from meshca.transport.metrics_http import MetricsApp
from meshca.wiring.admin import start_admin
from meshca.wiring.ca_runtime import serving_file, start_supervisor_ca
from meshca.wiring.keys import key_backend, key_encryption_key
from meshca.wiring.limits import start_retention
from meshca.wiring.publishing import start_publishing
from meshca.wiring.serving import ServingCertKeeper
from meshca.wiring.startup import database_url, listen_socket, prepare, serving_names, write_bundle
from meshca.wiring.worker import child_main, start_worker

log = logging.getLogger("meshca")
WORKER_START_SECONDS = 60


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set or SIGTERM/SIGINT arrives."""
    clock = SystemClock()
    serving = ServingCertKeeper(serving_file(settings), serving_names(settings),
                                settings.trust_domain, clock, key_encryption_key(settings))
    prepare(settings, clock, serving)
    settings = _pin_ext_authz_port(settings)
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
            target=child_main, args=(settings, grpc_host, bound_port, slots, row, ready),
            name=f"meshca-worker-{row}", daemon=True,
        )
        process.start()
        children.append((process, ready))
    worker = await start_worker(settings, sock, slots, 0)
    loop = asyncio.get_running_loop()
    for child, ready in children:
        if not await loop.run_in_executor(None, ready.wait, WORKER_START_SECONDS):
            raise SystemExit(f"{child.name} did not start (exit code {child.exitcode})")

    stop = stop or asyncio.Event()
    engine = open_engine(database_url(settings))
    ca, ca_tasks = await start_supervisor_ca(settings, engine, clock, stop)
    ca.also_wake.append(worker.reloader)
    worker_metrics = CaMetrics(slots, 0)  # this process is worker 0 too
    registry = CollectorRegistry()
    collector = CaMetricsCollector(slots, workers, registry)
    health = key_backend(settings).health
    CaStateCollector(SqlCaRepository(engine), ca.rotator, lambda: ca.reloader.sequence, registry,
                     vault_alert=(lambda: health.alert) if health is not None else None)
    metrics_host, metrics_port = split_host_port(settings.metrics_addr)
    metrics_server = HttpServer("metrics", MetricsApp(registry), None, settings.connection_limits,
                                max_header_bytes=settings.max_header_bytes,
                                on_refused=lambda reason: worker_metrics.connection_refused(
                                    "metrics", reason))
    metrics_sock = listen_socket(metrics_host, metrics_port, reuse_port=False)
    await metrics_server.start(metrics_sock)

    def on_ca_change(current: SigningAuthority) -> None:
        write_bundle(settings, current)
        serving.ensure(current)
        collector.root_expiry = min(r.not_valid_after_utc for r in current.bundle.roots).timestamp()

    on_ca_change(ca.reloader.current)
    ca.reloader.add_listener(on_ca_change)
    ca_tasks += start_publishing(settings, ca, worker_metrics, engine, stop)
    ca_tasks += start_retention(settings, engine, clock, stop, registry)
    admin = await start_admin(settings, ca, clock, worker.auth.admin_tokens, worker.policies,
                              worker_metrics)

    endpoints = {"grpc": f"{grpc_host}:{bound_port}", "admin": admin.address,
                 "metrics": f"{metrics_host}:{metrics_sock.getsockname()[1]}", "pid": os.getpid(),
                 "ext_authz": settings.ext_authz_addr}
    # Replaced atomically: whoever polls for the file never reads half of it.
    written = settings.data_dir / f"{ENDPOINTS_FILE}.tmp"
    written.write_text(json.dumps(endpoints))
    os.replace(written, settings.data_dir / ENDPOINTS_FILE)
    log.info("meshca serving CreateCertificate on %s (TLS, %d worker%s), admin API on https://%s, "
             "metrics on %s, trust domain %s", endpoints["grpc"], workers, "s" * (workers > 1),
             admin.address, endpoints["metrics"], settings.trust_domain)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = loop.create_task(_watch_children(children, stop))
    await stop.wait()
    log.info("meshca stopping")
    watcher.cancel()
    for task in ca_tasks:
        task.cancel()
    for child, _ in children:
        if child.is_alive():
            child.terminate()
    await admin.stop()
    await worker.stop()
    for child, _ in children:
        await loop.run_in_executor(None, child.join, 10)
        if child.is_alive():
            child.kill()
    await metrics_server.stop()
    engine.dispose()
    if watcher.done() and not watcher.cancelled() and watcher.result():
        raise SystemExit(1)


def _pin_ext_authz_port(settings: Settings) -> Settings:
    """Port 0 means "any free port": chosen once here, so every worker shares the same one
    (each binds it with SO_REUSEPORT)."""
    if settings.ext_authz_addr is None:
        return settings
    host, port = split_host_port(settings.ext_authz_addr)
    if port != 0:
        return settings
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        port = int(probe.getsockname()[1])
    shown = f"[{host}]" if ":" in host else host
    return dataclasses.replace(settings, ext_authz_addr=f"{shown}:{port}")


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
