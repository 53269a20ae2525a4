"""One worker process: gRPC server, TLS front, certificate log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import MutableSequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from meshca import logs
from meshca.config import Settings
from meshca.core.clock import SystemClock
from meshca.core.lifetime import LifetimePolicy
from meshca.gen.istio.v1.auth import ca_pb2, ca_pb2_grpc
from meshca.gen.meshca.v1 import svid_pb2, svid_pb2_grpc
from meshca.infra.db.blocked import SqlBlockedIdentities
from meshca.infra.db.engine import open_engine
from meshca.infra.db.records import SqlCertificateLog
from meshca.infra.supervision import WorkerEnd
from meshca.service.ca_reload import CaReloader
from meshca.service.federation_snapshot import FederationSnapshot
from meshca.service.issuance import IssuanceService
from meshca.service.jwt_minting import JwtLifetimes, SvidService
from meshca.service.policy_store import PolicyStore
from meshca.service.refusal_summary import RefusalSummary
from meshca.transport.grpc.ca_service import IstioCertificateServicer
from meshca.transport.grpc.decode_guard import AsyncDecodeGuard
from meshca.transport.grpc.issuance_log import IssuanceLog
from meshca.transport.grpc.svid_service import SvidServicer
from meshca.transport.listen import listen_socket
from meshca.transport.metrics import CaMetrics
from meshca.transport.tls_front import GrpcRelay, PeerCertificates, PrivateSocketDir, server_ssl_context
from meshca.transport.tls_listener import TlsListener
from meshca.wiring.authn import TokenAuthentication, build_token_authentication
from meshca.wiring.authz import start_authorization
from meshca.wiring.ca_runtime import reloader_for, serving_file
from meshca.wiring.federation import federation_snapshot
from meshca.wiring.keys import open_process_keys
from meshca.wiring.keystore import KeyBackend
from meshca.wiring.limits import flush_grpc, grpc_refusals, issuance_rate_limits
from meshca.wiring.startup import database_url

log = logging.getLogger("meshca")
CA_SERVICE = ca_pb2.DESCRIPTOR.services_by_name["IstioCertificateService"].full_name
SVID_SERVICE = svid_pb2.DESCRIPTOR.services_by_name["SvidService"].full_name
MAX_MESSAGE_BYTES = 256 * 1024


@dataclass
class Worker:
    """One process's serving stack; `stop` shuts it down gracefully."""

    front: TlsListener
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    records: SqlCertificateLog
    reloader: CaReloader
    policies: PolicyStore
    ext_authz: grpc.Server | None
    auth: TokenAuthentication
    tasks: list[asyncio.Task[None]]
    stopping: asyncio.Event
    dispose: contextlib.ExitStack
    sockets: PrivateSocketDir
    refusals: RefusalSummary
    federation: FederationSnapshot  # the federated bundles, re-read every reload interval

    async def stop(self) -> None:
        self.stopping.set()
        await self.health.enter_graceful_shutdown()
        await self.front.stop()
        await self.server.stop(grace=5)
        self.sockets.remove()
        if self.ext_authz is not None:
            stopped = self.ext_authz.stop(grace=5)
            await asyncio.to_thread(stopped.wait, 10)
        await flush_grpc(self.refusals, self.records)  # the last interval's refused callers
        self.records.close()
        for task in self.tasks:
            task.cancel()
        self.dispose.close()


async def start_worker(
    settings: Settings, sock: socket.socket, slots: MutableSequence[float], row: int,
    keys: KeyBackend,
) -> Worker:
    """`keys`: the process's key backend (one per process, see wiring/keys.py)."""
    clock = SystemClock()
    engine = open_engine(database_url(settings), filled=True)
    cleanup = contextlib.ExitStack()
    cleanup.callback(engine.dispose)
    reloader = await asyncio.to_thread(reloader_for, settings, engine, clock, keys,
                                       publishes=False)
    records = SqlCertificateLog(engine)
    metrics = CaMetrics(slots, row)
    stopping = asyncio.Event()
    auth = build_token_authentication(settings, metrics, stopping, keys.kek)
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(job) for job in auth.background]
    tasks.append(loop.create_task(
        reloader.run(stopping, settings.ca_reload_interval.total_seconds())))
    refusals, flusher = grpc_refusals(settings, metrics, records, stopping)
    tasks.append(flusher)
    federation = federation_snapshot(settings, engine, stopping, tasks)
    rate_limits = issuance_rate_limits(settings)
    issuance = IssuanceService(
        trust_domain=settings.trust_domain,
        workloads=auth.workloads,
        authority=lambda: reloader.current,
        lifetimes=LifetimePolicy(settings.default_ttl, settings.max_ttl, settings.backdate),
        certificate_log=records,
        audit=records,
        clock=clock,
        refusals=refusals,
        rate_limits=rate_limits,
        max_renewal_age=settings.max_renewal_age,
        federated_roots=federation.roots_pem if settings.istio_include_federated else None,
    )
    svids = SvidService(
        issuance=issuance, keys=lambda: reloader.jwt_keys, authority=lambda: reloader.current,
        sequence=lambda: reloader.sequence,
        refresh_hint_seconds=int(settings.bundle_refresh_hint.total_seconds()),
        blocked=SqlBlockedIdentities(engine),
        lifetimes=JwtLifetimes(settings.jwt_default_ttl, settings.jwt_max_ttl), clock=clock,
        rate_limits=rate_limits, federation=federation,
    )
    server = grpc.aio.server(
        interceptors=[AsyncDecodeGuard()],  # an undecodable request is INVALID_ARGUMENT
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            # Headers carry the bearer token; grpc's 8 KiB default would refuse long tokens
            # before meshca's own 16 KiB token limit answers with UNAUTHENTICATED.
            ("grpc.max_metadata_size", settings.max_header_bytes),
            ("grpc.absolute_max_metadata_size", settings.max_header_bytes),
            ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        ]
    )
    peers = PeerCertificates()
    ca_pb2_grpc.add_IstioCertificateServiceServicer_to_server(
        IstioCertificateServicer(issuance, metrics, peers,
                                 IssuanceLog() if settings.log_issuances else None), server
    )
    svid_pb2_grpc.add_SvidServiceServicer_to_server(SvidServicer(svids, metrics, peers), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (CA_SERVICE, SVID_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME),
        server,
    )
    # The gRPC server is reachable only through the TLS listener (tls_front.py).
    sockets = PrivateSocketDir()
    cleanup.callback(sockets.remove)
    if server.add_insecure_port(f"unix:{sockets.upstream}") == 0:
        raise OSError(f"cannot listen on {sockets.upstream}")
    await server.start()
    serving = str(serving_file(settings))
    password = keys.kek.tls_password()
    front = TlsListener(
        "grpc",
        lambda: server_ssl_context(serving, password, reloader.current.bundle.pem),
        GrpcRelay(sockets, peers),
        settings.connection_limits,
        on_refused=lambda reason: metrics.connection_refused("grpc", reason),
    )
    await front.start(sock)
    reloader.add_listener(lambda _: front.reload())
    policies, ext_authz = await start_authorization(settings, engine, stopping, tasks,
                                                    metrics=metrics, reloader=reloader,
                                                    kek=keys.kek)
    for service in ("", CA_SERVICE, SVID_SERVICE):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return Worker(front, server, health_servicer, records, reloader, policies, ext_authz, auth, tasks,
                  stopping, cleanup, sockets, refusals, federation)


def child_main(end: WorkerEnd, settings: Settings, host: str, port: int,
               slots: MutableSequence[float], row: int) -> None:
    """Entry point of worker processes 1..N-1 (spawned, so nothing is inherited by fork),
    called by `worker_entry` once the worker is tied to its supervisor. The worker reports
    through `end` that it is ready, or why it could not start."""
    logs.configure(settings.log_level, settings.log_format, worker=row)

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # The supervisor stops its workers with SIGTERM. SIGINT stays ignored (worker_entry):
        # Ctrl-C reaches the whole process group, and acting on it is the supervisor's part.
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        try:
            worker = await start_worker(settings, listen_socket(host, port, True), slots, row,
                                        open_process_keys(settings))
        except Exception as exc:  # the supervisor says why, on one line, and stops
            log.debug("worker start-up failed", exc_info=True)
            end.report_failure(f"{type(exc).__name__}: {exc}")
            return 1
        end.at_leave(worker.sockets.remove)
        end.report_ready()
        await stop.wait()
        await worker.stop()
        # Stopped already. A late SIGTERM could otherwise meet the closing event loop, and
        # Python would print a complaint instead of running a handler.
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return 0

    sys.exit(asyncio.run(run()))
