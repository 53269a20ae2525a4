"""One worker process: gRPC server, TLS front, certificate log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import MutableSequence
from dataclasses import dataclass
from multiprocessing.synchronize import Event as ProcessEvent

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from meshca.config import Settings
from meshca.core.clock import SystemClock
from meshca.core.lifetime import LifetimePolicy
from meshca.gen.istio.v1.auth import ca_pb2, ca_pb2_grpc
from meshca.infra.db.ca_journal import SqlCaJournal
from meshca.infra.db.engine import open_engine
from meshca.infra.db.records import SqlCertificateLog
from meshca.infra.keyfiles import FileKeyStore
from meshca.service.ca_setup import load_signing_authority
from meshca.service.issuance import IssuanceService
from meshca.transport.grpc.ca_service import IstioCertificateServicer
from meshca.transport.metrics import CaMetrics
from meshca.transport.tls_front import PeerCertificates, TlsFront, server_ssl_context
from meshca.wiring.authn import TokenAuthentication, build_token_authentication
from meshca.wiring.startup import database_url, listen_socket, tls_files

log = logging.getLogger("meshca")
CA_SERVICE = ca_pb2.DESCRIPTOR.services_by_name["IstioCertificateService"].full_name
MAX_MESSAGE_BYTES = 256 * 1024
# Headers carry the bearer token; grpc's 8 KiB default would refuse long tokens before
# meshca's own 16 KiB token limit gets to answer with UNAUTHENTICATED.
MAX_METADATA_BYTES = 64 * 1024


@dataclass
class Worker:
    """One process's serving stack; `stop` shuts it down gracefully."""

    front: TlsFront
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    records: SqlCertificateLog
    auth: TokenAuthentication
    tasks: list[asyncio.Task[None]]
    stopping: asyncio.Event
    dispose: contextlib.ExitStack

    async def stop(self) -> None:
        self.stopping.set()
        await self.health.enter_graceful_shutdown()
        await self.front.stop()
        await self.server.stop(grace=5)
        self.records.close()
        for task in self.tasks:
            task.cancel()
        self.dispose.close()


async def start_worker(
    settings: Settings, sock: socket.socket, slots: MutableSequence[float], row: int
) -> Worker:
    clock = SystemClock()
    engine = open_engine(database_url(settings))
    cleanup = contextlib.ExitStack()
    cleanup.callback(engine.dispose)
    authority = load_signing_authority(SqlCaJournal(engine), FileKeyStore(settings.data_dir))
    records = SqlCertificateLog(engine)
    metrics = CaMetrics(slots, row)
    stopping = asyncio.Event()
    auth = build_token_authentication(settings, metrics, stopping)
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(job) for job in auth.background]
    issuance = IssuanceService(
        trust_domain=settings.trust_domain,
        workloads=auth.workloads,
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
        IstioCertificateServicer(issuance, metrics, peers), server
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
    chain_file, key_file = tls_files(settings)
    front = TlsFront(
        upstream_port,
        lambda: server_ssl_context(str(chain_file), str(key_file), authority.bundle.pem),
        peers,
    )
    await front.start(sock)
    for service in ("", CA_SERVICE):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return Worker(front, server, health_servicer, records, auth, tasks, stopping, cleanup)


def child_main(settings: Settings, host: str, port: int, slots: MutableSequence[float], row: int,
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


