"""The supervisor: prepare once, start workers, serve metrics and the admin API, stop."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import signal
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as ProcessEvent

from prometheus_client import CollectorRegistry, start_http_server

from meshca.config import ENDPOINTS_FILE, Settings, split_host_port
from meshca.core.clock import SystemClock
from meshca.transport.metrics import CaMetricsCollector, shared_slots
from meshca.wiring.admin import start_admin
from meshca.wiring.startup import listen_socket, prepare
from meshca.wiring.worker import child_main, start_worker

log = logging.getLogger("meshca")
WORKER_START_SECONDS = 60


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

    registry = CollectorRegistry()
    collector = CaMetricsCollector(slots, workers, registry)
    collector.root_expiry = min(r.not_valid_after_utc for r in authority.bundle.roots).timestamp()
    metrics_host, metrics_port = split_host_port(settings.metrics_addr)
    metrics_server, _ = start_http_server(metrics_port, metrics_host, registry=registry)

    admin = await start_admin(settings, authority, clock, worker.auth.admin_tokens)

    endpoints = {"grpc": f"{grpc_host}:{bound_port}", "admin": admin.address,
                 "metrics": f"{metrics_host}:{metrics_server.server_port}", "pid": os.getpid()}
    (settings.data_dir / ENDPOINTS_FILE).write_text(json.dumps(endpoints))
    log.info("meshca serving CreateCertificate on %s (TLS, %d worker%s), admin API on https://%s, "
             "metrics on %s, trust domain %s", endpoints["grpc"], workers, "s" * (workers > 1),
             admin.address, endpoints["metrics"], settings.trust_domain)

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
    await admin.stop()
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
