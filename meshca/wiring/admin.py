"""The admin API: FastAPI served over HTTPS by uvicorn's protocol on meshca's TLS listener."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from meshca.config import ADMIN_TOKEN_FILE, Settings, split_host_port
from meshca.core.clock import Clock
from meshca.core.roles import Role
from meshca.infra.db.admin_tokens import SqlAdminTokens, TokenNameTaken
from meshca.infra.db.ca_repository import SqlCaRepository
from meshca.infra.db.engine import open_engine
from meshca.infra.db.inventory import SqlInventory
from meshca.infra.db.policies import SqlPolicies
from meshca.infra.keyfiles import write_private_file
from meshca.service.admin_auth import AdminAuthenticator
from meshca.service.policy_store import PolicyStore
from meshca.service.ports import AuditEntry, TokenAuthenticator
from meshca.transport.http_server import HttpServer
from meshca.transport.metrics import CaMetrics
from meshca.transport.rest.app import AdminLimits, create_app
from meshca.transport.rest.context import AdminContext
from meshca.transport.rest.routes.authz import AuthzContext
from meshca.transport.rest.routes.tokens import new_admin_token
from meshca.transport.tls_front import server_ssl_context
from meshca.wiring.ca_runtime import SupervisorCa, serving_file
from meshca.wiring.keystore import KeyBackend
from meshca.wiring.limits import AdminRefusals
from meshca.wiring.startup import database_url, listen_socket

log = logging.getLogger("meshca")


@dataclass
class AdminServer:
    address: str
    server: HttpServer
    refused: AdminRefusals

    async def stop(self) -> None:
        await self.server.stop()
        await self.refused.close()  # the last interval's refused callers


def bootstrap_admin_token(settings: Settings, tokens: SqlAdminTokens) -> None:
    """First start (or no live admin token left): a new admin token, its digest in the
    database, the token itself in a 0600 file."""
    if tokens.live_admin_exists():
        return
    token = new_admin_token()
    for name in ("bootstrap-admin", f"bootstrap-admin-{datetime.now(UTC):%Y%m%d%H%M%S}"):
        try:
            tokens.create(name, Role.ADMIN, token, AuditEntry(
                at=datetime.now(UTC), actor="meshca", action="admin-token.create",
                target=name, outcome="ok", detail="admin"))
            break
        except TokenNameTaken:
            continue
    write_private_file(settings.data_dir / ADMIN_TOKEN_FILE, (token + "\n").encode())
    log.info("created the first admin token in %s", settings.data_dir / ADMIN_TOKEN_FILE)


async def start_admin(settings: Settings, ca: SupervisorCa, clock: Clock,
                      service_account_tokens: TokenAuthenticator,
                      policies: PolicyStore, metrics: CaMetrics, keys: KeyBackend) -> AdminServer:
    engine = open_engine(database_url(settings))
    reloader = ca.reloader
    context = AdminContext(
        engine=engine, inventory=SqlInventory(engine), tokens=SqlAdminTokens(engine),
        ca=SqlCaRepository(engine), authority=lambda: reloader.current, clock=clock,
        keys=keys,
        bundle_refresh_hint_seconds=int(settings.bundle_refresh_hint.total_seconds()),
        rotator=ca.rotator, rotation_policy=settings.rotation_policy, plugged=ca.plugged,
        bundle_sequence=lambda: reloader.sequence, ca_changed=ca.changed,
    )
    bootstrap_admin_token(settings, context.tokens)
    authenticator = AdminAuthenticator(
        tokens=context.tokens,
        service_account_tokens=service_account_tokens,
        service_accounts=dict(settings.admin_service_accounts),
        spiffe_ids=dict(settings.admin_spiffe_ids),
        certificate_usable=context.inventory.usable,
    )
    # The in-process worker's policy set: a change made here is enforced here at once.
    authz_context = AuthzContext(policies, SqlPolicies(engine), policies.current.mesh)
    refused = AdminRefusals(settings, engine, metrics)  # summarised, not a row per request
    app = create_app(context, authenticator, authz_context, limits=admin_limits(settings),
                     refused=refused)
    serving = str(serving_file(settings))
    password = keys.kek.tls_password()
    server = HttpServer(
        "admin", app,
        lambda: server_ssl_context(serving, password, reloader.current.bundle.pem,
                                   alpn=("http/1.1",)),
        settings.connection_limits, max_header_bytes=settings.max_header_bytes,
        on_refused=lambda reason: metrics.connection_refused("admin", reason),
    )
    reloader.add_listener(lambda _: server.reload())
    host, port = split_host_port(settings.admin_addr)
    sock = listen_socket(host, port, reuse_port=False)
    await server.start(sock)
    refused.start()
    return AdminServer(f"{host}:{sock.getsockname()[1]}", server, refused)


def admin_limits(settings: Settings) -> AdminLimits:
    return AdminLimits(max_request_bytes=settings.max_request_bytes,
                       max_header_bytes=settings.max_header_bytes,
                       auth_failures=settings.admin_auth_failures,
                       auth_backoff_seconds=settings.admin_auth_backoff.total_seconds())
