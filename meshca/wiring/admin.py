"""The admin API: FastAPI served over HTTPS by uvicorn's protocol on meshca's TLS listener."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from meshca.config import ADMIN_TOKEN_FILE, Settings, split_host_port
from meshca.core.clock import Clock
from meshca.infra.db.admin_tokens import SqlAdminTokens
from meshca.infra.db.audit import SqlAuditLog
from meshca.infra.db.ca_repository import SqlCaRepository
from meshca.infra.db.engine import open_engine
from meshca.infra.db.inventory import SqlInventory
from meshca.infra.db.policies import SqlPolicies
from meshca.infra.db.probe import SqlStoreProbe
from meshca.infra.keyfiles import write_private_file
from meshca.service.admin.audit import AuditTrail
from meshca.service.admin.ca import CaAdmin, PluggedStatus, TrustBundleView
from meshca.service.admin.certificates import CertificateAdmin
from meshca.service.admin.health import Readiness
from meshca.service.admin.identities import IdentityAdmin
from meshca.service.admin.policies import PolicyAdmin
from meshca.service.admin.tokens import TokenAdmin
from meshca.service.admin_auth import AdminAuthenticator
from meshca.service.admin_ports import IssuanceCounters
from meshca.service.ca_source import PluggedCaSource
from meshca.service.policy_store import PolicyStore
from meshca.service.ports import TokenAuthenticator
from meshca.transport.http_server import HttpServer
from meshca.transport.listen import listen_socket
from meshca.transport.metrics import CaMetrics
from meshca.transport.rest.app import AdminLimits, create_app
from meshca.transport.rest.dependencies import AdminServices
from meshca.transport.tls_front import server_ssl_context
from meshca.wiring.ca_runtime import SupervisorCa, serving_file
from meshca.wiring.federation import SupervisorFederation, readiness_warnings
from meshca.wiring.keystore import KeyBackend
from meshca.wiring.limits import AdminRefusals
from meshca.wiring.startup import database_url

log = logging.getLogger("meshca")


@dataclass
class AdminServer:
    address: str
    server: HttpServer
    refused: AdminRefusals

    async def stop(self) -> None:
        await self.server.stop()
        await self.refused.close()  # the last interval's refused callers


def bootstrap_admin_token(settings: Settings, tokens: TokenAdmin) -> None:
    """First start (or no live admin token left): a new admin token, its digest in the
    database, the token itself in a 0600 file."""
    token = tokens.bootstrap()
    if token is None:
        return
    write_private_file(settings.data_dir / ADMIN_TOKEN_FILE, (token + "\n").encode())
    log.info("created the first admin token in %s", settings.data_dir / ADMIN_TOKEN_FILE)


def plugged_status(source: PluggedCaSource) -> Callable[[], PluggedStatus]:
    """What GET /v1/ca shows of a plugged-in CA's directory, read when asked."""
    def status() -> PluggedStatus:
        watcher = source.watcher
        current = watcher.current
        return PluggedStatus(directory=str(watcher.directory),
                             loaded_fingerprint=current.fingerprint if current else None,
                             last_error=watcher.last_error,
                             warnings=current.warnings if current else ())
    return status


async def start_admin(settings: Settings, ca: SupervisorCa, clock: Clock,
                      service_account_tokens: TokenAuthenticator,
                      policies: PolicyStore, metrics: CaMetrics, keys: KeyBackend,
                      federation: SupervisorFederation,
                      issuance: IssuanceCounters | None = None,
                      sock: socket.socket | None = None) -> AdminServer:
    engine = open_engine(database_url(settings), filled=True)
    reloader = ca.reloader
    inventory, tokens = SqlInventory(engine), SqlAdminTokens(engine)
    audit_log, generations = SqlAuditLog(engine), SqlCaRepository(engine)
    vault = keys.health
    services = AdminServices(
        certificates=CertificateAdmin(inventory, generations, keys.signer,
                                      lambda: reloader.current, clock),
        identities=IdentityAdmin(inventory, clock),
        tokens=TokenAdmin(tokens, clock),
        ca=CaAdmin(generations=generations, audit=audit_log, clock=clock,
                   authority=lambda: reloader.current, rotator=ca.rotator,
                   rotation_policy=settings.rotation_policy,
                   plugged=plugged_status(ca.plugged) if ca.plugged else None,
                   bundle_sequence=lambda: reloader.sequence, changed=ca.changed),
        bundle=TrustBundleView(lambda: reloader.current, lambda: reloader.sequence,
                               int(settings.bundle_refresh_hint.total_seconds()),
                               lambda: reloader.jwt_keys.published),
        audit=AuditTrail(audit_log),
        health=Readiness(lambda: reloader.current, SqlStoreProbe(engine),
                         (lambda: vault.ready) if vault is not None else None,
                         warnings=readiness_warnings(federation.snapshot)),
        # The in-process worker's policy set: a change made here is enforced here at once.
        authz=PolicyAdmin(policies, SqlPolicies(engine), policies.current.mesh, clock),
        clock=clock,
        federation=federation.admin,
        issuance=issuance,
    )
    bootstrap_admin_token(settings, services.tokens)
    authenticator = AdminAuthenticator(
        tokens=tokens,
        service_account_tokens=service_account_tokens,
        service_accounts=dict(settings.admin_service_accounts),
        spiffe_ids=dict(settings.admin_spiffe_ids),
        certificate_usable=inventory.usable,
        own_trust_domain=settings.trust_domain,
        local_roots=lambda: reloader.current.bundle.roots,
        federated=federation.snapshot.snapshot,
    )
    refused = AdminRefusals(settings, engine, metrics)  # summarised, not a row per request
    app = create_app(services, authenticator, limits=admin_limits(settings), refused=refused)
    serving = str(serving_file(settings))
    password = keys.kek.tls_password()
    server = HttpServer(
        "admin", app,
        # Federated roots too: which trust domain's root vouched for a client certificate is
        # checked per request (AdminAuthenticator), never by this merged list.
        lambda: server_ssl_context(serving, password, reloader.current.bundle.pem
                                   + federation.snapshot.roots_pem(), alpn=("http/1.1",)),
        settings.connection_limits, max_header_bytes=settings.max_header_bytes,
        on_refused=lambda reason: metrics.connection_refused("admin", reason),
    )
    reloader.add_listener(lambda _: server.reload())
    federation.snapshot.add_listener(lambda _: server.reload())
    host, port = split_host_port(settings.admin_addr)
    sock = sock or listen_socket(host, port, reuse_port=False)  # taken early by `meshca serve`
    await server.start(sock)
    refused.start()
    return AdminServer(f"{host}:{sock.getsockname()[1]}", server, refused)


def admin_limits(settings: Settings) -> AdminLimits:
    return AdminLimits(max_request_bytes=settings.max_request_bytes,
                       max_header_bytes=settings.max_header_bytes,
                       auth_failures=settings.admin_auth_failures,
                       auth_backoff_seconds=settings.admin_auth_backoff.total_seconds())
