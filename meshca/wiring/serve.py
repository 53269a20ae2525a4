"""The supervisor: prepare once, start workers, serve metrics and the admin API, stop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import MutableSequence
from multiprocessing.process import BaseProcess

from prometheus_client import CollectorRegistry

from meshca.config import ENDPOINTS_FILE, Settings, split_host_port
from meshca.core.authority import SigningAuthority
from meshca.core.clock import SystemClock
from meshca.errors import ConfigurationError, InvalidRequest
from meshca.infra.db.ca_repository import SqlCaRepository
from meshca.infra.db.engine import open_engine
from meshca.infra.supervision import WorkerLink, all_ready, worker_entry
from meshca.service.admin.ca import TrustBundleView
from meshca.transport.ca_metrics import CaStateCollector
from meshca.transport.http_server import HttpServer
from meshca.transport.issuance_counts import CollectorIssuanceCounts
from meshca.transport.metrics import CaMetrics, CaMetricsCollector, shared_slots
from meshca.transport.metrics_http import MetricsApp
from meshca.transport.process_metrics import register_process_metrics
from meshca.wiring.admin import start_admin
from meshca.wiring.ca_runtime import serving_file, start_supervisor_ca
from meshca.wiring.federation import start_bundle_endpoint, start_federation
from meshca.wiring.keys import open_process_keys
from meshca.wiring.limits import start_retention
from meshca.wiring.ports import remove_endpoints, take_ports
from meshca.wiring.publishing import start_publishing
from meshca.wiring.serving import ServingCertKeeper
from meshca.wiring.startup import database_url, prepare, serving_names, write_bundle
from meshca.wiring.worker import start_worker

log = logging.getLogger("meshca")
WORKER_START_SECONDS = 60
WORKER_STOP_SECONDS = 10
# Imported by the worker only once it is tied to this process (see worker_entry).
CHILD_MAIN = "meshca.wiring.worker:child_main"


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set or SIGTERM/SIGINT arrives. That may happen at any moment of the
    start-up too: whatever is up by then is stopped, workers included, and serve returns."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    # First of all: a signal that met its default action later would kill this process and
    # leave its workers running.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop_on, sig, stop)
    async with contextlib.AsyncExitStack() as running:
        try:
            watcher = await _start(settings, stop, running)
        except _Stopped:
            log.info("meshca stopping before it finished starting")
            return
        await stop.wait()
        log.info("meshca stopping")
    if watcher.done() and not watcher.cancelled() and watcher.result():
        raise SystemExit(1)


class _Stopped(Exception):
    """A stop was asked for while starting: unwind what is up."""


def _stop_on(sig: signal.Signals, stop: asyncio.Event) -> None:
    if not stop.is_set():
        log.info("%s received", sig.name)
    stop.set()


async def _start(settings: Settings, stop: asyncio.Event,
                 running: contextlib.AsyncExitStack) -> asyncio.Task[bool]:
    """Bring everything up, pushing onto `running` how to take each piece down again;
    _Stopped as soon as `stop` is seen. Returns the task that watches the other workers."""
    def check() -> None:
        if stop.is_set():
            raise _Stopped

    # Before anything touches the data directory: a port in use stops a second server here.
    ports = take_ports(settings, running)
    clock = SystemClock()
    keys = open_process_keys(settings)  # the only key backend of this process
    serving = ServingCertKeeper(serving_file(settings), serving_names(settings),
                                settings.trust_domain, clock, keys.kek)
    # In a thread, so that a signal is heard meanwhile; the preparation (perhaps bringing up
    # a new CA) is let finish, and then nothing is started.
    await asyncio.to_thread(prepare, settings, clock, serving, keys)
    check()
    settings = _pin_ext_authz_port(settings)
    workers = settings.workers
    grpc_host, _ = split_host_port(settings.grpc_addr)
    sock = ports.grpc
    bound_port = int(sock.getsockname()[1])
    slots = shared_slots(workers)
    links = _spawn_workers(settings, grpc_host, bound_port, slots, running)
    worker = await start_worker(settings, sock, slots, 0, keys)
    running.push_async_callback(worker.stop)
    check()
    if not await all_ready(links, stop, WORKER_START_SECONDS):
        raise _Stopped

    engine = open_engine(database_url(settings), filled=True)
    running.callback(engine.dispose)
    ca, ca_tasks = await start_supervisor_ca(settings, engine, clock, stop, keys)
    running.callback(_cancel, ca_tasks)
    ca.also_wake.append(worker.reloader)
    worker_metrics = CaMetrics(slots, 0)  # this process is worker 0 too
    registry = CollectorRegistry()
    register_process_metrics(registry)
    collector = CaMetricsCollector(slots, workers, registry)
    health = keys.health
    CaStateCollector(SqlCaRepository(engine), ca.rotator, lambda: ca.reloader.sequence, registry,
                     vault_alert=(lambda: health.alert) if health is not None else None)
    metrics_host, _ = split_host_port(settings.metrics_addr)
    metrics_server = HttpServer("metrics", MetricsApp(registry), None, settings.connection_limits,
                                max_header_bytes=settings.max_header_bytes,
                                on_refused=lambda reason: worker_metrics.connection_refused(
                                    "metrics", reason))
    metrics_sock = ports.metrics
    await metrics_server.start(metrics_sock)
    running.push_async_callback(metrics_server.stop)

    def on_ca_change(current: SigningAuthority) -> None:
        write_bundle(settings, current)
        serving.ensure(current)
        collector.root_expiry = min(r.not_valid_after_utc for r in current.bundle.roots).timestamp()

    on_ca_change(ca.reloader.current)
    ca.reloader.add_listener(on_ca_change)
    ca_tasks += start_publishing(settings, ca, worker_metrics, engine, stop)
    ca_tasks += start_retention(settings, engine, clock, stop, registry)
    check()
    # The in-process worker's snapshot serves the supervisor too (admin mTLS, metrics).
    try:
        federation = await start_federation(settings, engine, clock, stop, registry,
                                            worker.federation)
    except InvalidRequest as exc:  # a --federate-with entry that cannot be used
        raise ConfigurationError(f"--federate-with: {exc}") from None
    running.push_async_callback(federation.stop)
    admin = await start_admin(settings, ca, clock, worker.auth.admin_tokens, worker.policies,
                              worker_metrics, keys, federation, sock=ports.admin,
                              issuance=CollectorIssuanceCounts(collector))
    running.push_async_callback(admin.stop)
    check()
    await start_bundle_endpoint(
        settings, federation,
        TrustBundleView(lambda: ca.reloader.current, lambda: ca.reloader.sequence,
                        int(settings.bundle_refresh_hint.total_seconds()),
                        lambda: ca.reloader.jwt_keys.published),
        clock, keys.kek, lambda: ca.reloader.current, ca.reloader.add_listener, worker_metrics,
        ports.federation)
    check()

    endpoints = {"grpc": f"{grpc_host}:{bound_port}", "admin": admin.address,
                 "metrics": f"{metrics_host}:{metrics_sock.getsockname()[1]}", "pid": os.getpid(),
                 "ext_authz": settings.ext_authz_addr, "federation": federation.endpoint_address}
    # Replaced atomically: whoever polls for the file never reads half of it.
    written = settings.data_dir / f"{ENDPOINTS_FILE}.tmp"
    written.write_text(json.dumps(endpoints))
    os.replace(written, settings.data_dir / ENDPOINTS_FILE)
    running.callback(remove_endpoints, settings.data_dir)  # undone first: clients see it at once
    log.info("meshca serving CreateCertificate on %s (TLS, %d worker%s), admin API on https://%s, "
             "metrics on %s, trust domain %s", endpoints["grpc"], workers, "s" * (workers > 1),
             admin.address, endpoints["metrics"], settings.trust_domain)
    # Undone first: the other workers drain while this one does.
    running.callback(_terminate, links)
    processes = [link.process for link in links if link.process is not None]
    watcher = asyncio.get_running_loop().create_task(_watch_children(processes, stop))
    running.callback(watcher.cancel)
    return watcher


def _spawn_workers(settings: Settings, host: str, port: int, slots: MutableSequence[float],
                   running: contextlib.AsyncExitStack) -> list[WorkerLink]:
    """Workers 1..N-1, each tied to this process (`meshca.infra.supervision`); they are
    stopped and reaped when `running` unwinds, whatever stage start-up reached."""
    context = multiprocessing.get_context("spawn")
    links: list[WorkerLink] = []
    running.push_async_callback(_reap, links)
    for row in range(1, settings.workers):
        link = WorkerLink(f"meshca-worker-{row}")
        links.append(link)
        link.start(context.Process(
            target=worker_entry,
            args=(link.worker_end, CHILD_MAIN, settings, host, port, slots, row),
            name=link.name, daemon=True,
        ))
    return links


def _terminate(links: list[WorkerLink]) -> None:
    for link in links:
        link.terminate()


async def _reap(links: list[WorkerLink]) -> None:
    _terminate(links)
    for process in (link.process for link in links if link.process is not None):
        await asyncio.to_thread(process.join, WORKER_STOP_SECONDS)
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join, 5)
    for link in links:  # only now: a closed lifeline makes a worker leave without draining
        link.close()


def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()


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


async def _watch_children(children: list[BaseProcess], stop: asyncio.Event) -> bool:
    """A worker that dies takes the server down, so that its supervisor restarts it whole."""
    while not stop.is_set():
        for child in children:
            if not child.is_alive():
                log.error("%s exited with code %s; stopping meshca", child.name, child.exitcode)
                stop.set()
                return True
        await asyncio.sleep(0.5)
    return False
