"""Composition root: the only module that knows every concrete class."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
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
from meshca.service.ca_setup import CaProfile, ensure_signing_authority
from meshca.service.issuance import IssuanceService
from meshca.service.serving_cert import issue_serving_certificate
from meshca.transport.grpc.ca_service import IstioCertificateServicer
from meshca.transport.metrics import CaMetrics
from meshca.transport.tls_front import PeerCertificates, TlsFront, server_ssl_context

log = logging.getLogger("meshca")
CA_SERVICE = ca_pb2.DESCRIPTOR.services_by_name["IstioCertificateService"].full_name
MAX_MESSAGE_BYTES = 256 * 1024
# Request headers: gRPC's defaults (8 KiB soft, 16 KiB hard) would refuse a long token with
# RESOURCE_EXHAUSTED, which Istio's agent retries forever, before the token decoder could
# refuse it (above 16 KiB) with UNAUTHENTICATED. Soft = hard: no probabilistic rejections.
MAX_METADATA_BYTES = 64 * 1024
ENDPOINTS_FILE = "endpoints.json"


@dataclass(frozen=True, slots=True)
class Endpoints:
    grpc: str
    metrics: str


def prepare_data_dir(data_dir: Path) -> None:
    # Everything meshca creates is private unless it says otherwise (the bundle is 0644).
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)


def token_authenticator(settings: Settings, clock: Clock) -> JwksTokenAuthenticator:
    keys: Mapping[str, VerificationKey]
    if settings.token_issuer is None:
        keys = DevIssuer.load_or_create(settings.data_dir).public_keys()
        issuer = DEV_ISSUER
        log.warning(
            "\n%s\nDEVELOPMENT TOKEN ISSUER IN USE: no --token-issuer was given, so meshca trusts\n"
            "tokens signed by the key in %s. Anyone who can read that file can\n"
            "mint any identity. Configure --token-issuer and --token-jwks for production.\n%s",
            "!" * 78, settings.data_dir / "dev-token-issuer.key", "!" * 78,
        )
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


def write_bundle(settings: Settings, authority: SigningAuthority) -> None:
    path = settings.bundle_path
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(authority.bundle.pem)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set or SIGTERM/SIGINT arrives."""
    clock = SystemClock()
    prepare_data_dir(settings.data_dir)
    engine = open_engine(settings.database_url or database_url_for(settings.data_dir))
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
    write_bundle(settings, authority)

    registry = CollectorRegistry()
    metrics = CaMetrics(registry)
    metrics.set_root_expiry(min(r.not_valid_after_utc for r in authority.bundle.roots).timestamp())
    metrics_host, metrics_port = split_host_port(settings.metrics_addr)
    metrics_server, _ = start_http_server(metrics_port, metrics_host, registry=registry)

    records = SqlCertificateLog(engine)
    issuance = IssuanceService(
        trust_domain=settings.trust_domain,
        authenticator=token_authenticator(settings, clock),
        authority=lambda: authority,
        lifetimes=LifetimePolicy(settings.default_ttl, settings.max_ttl, settings.backdate),
        certificate_log=records,
        clock=clock,
    )

    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ]
    )
    ca_pb2_grpc.add_IstioCertificateServiceServicer_to_server(
        IstioCertificateServicer(issuance, metrics), server
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

    grpc_host, grpc_port = split_host_port(settings.grpc_addr)
    serving = issue_serving_certificate(
        authority, [*settings.server_dns_names, grpc_host], settings.trust_domain, clock
    )
    tls_dir = settings.data_dir / "tls"
    write_private_file(tls_dir / "grpc-key.pem", private_key_pem(serving.key))
    write_private_file(tls_dir / "grpc-chain.pem", serving.chain_pem.encode())
    front = TlsFront(
        upstream_port,
        lambda: server_ssl_context(
            str(tls_dir / "grpc-chain.pem"), str(tls_dir / "grpc-key.pem"), authority.bundle.pem
        ),
        PeerCertificates(),
    )
    bound_port = await front.start(grpc_host, grpc_port)
    for service in ("", CA_SERVICE):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)

    endpoints = Endpoints(
        grpc=f"{grpc_host}:{bound_port}", metrics=f"{metrics_host}:{metrics_server.server_port}"
    )
    (settings.data_dir / ENDPOINTS_FILE).write_text(
        json.dumps({"grpc": endpoints.grpc, "metrics": endpoints.metrics, "pid": os.getpid()})
    )
    log.info("meshca serving CreateCertificate on %s (TLS), metrics on %s, trust domain %s",
             endpoints.grpc, endpoints.metrics, settings.trust_domain)

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("meshca stopping")
    await health_servicer.enter_graceful_shutdown()
    await front.stop()
    await server.stop(grace=5)
    records.close()
    metrics_server.shutdown()
    engine.dispose()
