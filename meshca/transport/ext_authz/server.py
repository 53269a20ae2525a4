"""`envoy.service.auth.v3.Authorization/Check` on `--ext-authz-addr`: plaintext gRPC, or with
`--ext-authz-tls` meshca's serving certificate and a required client certificate (tls.py).

Fail closed by construction: Check answers every request with a CheckResponse and never
raises, so Envoy's `failure_mode_allow` never gets to decide. Whatever meshca cannot check (an
unreadable request or peer certificate, an identity state too old, its own failure) is denied,
with a reason code (reasons.py). A check touches no database, so it answers in microseconds
whatever the database does.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc

from meshca.authz import parse_request
from meshca.service.policy_store import PolicyStore
from meshca.transport.ext_authz import reasons
from meshca.transport.ext_authz.attributes import check_request_to_authz, check_request_to_json
from meshca.transport.ext_authz.identity import IdentityCheck, NoIdentityCheck
from meshca.transport.ext_authz.responses import DECISION_HEADER, Responses, Verdict
from meshca.transport.grpc.decode_guard import DecodeGuard

log = logging.getLogger(__name__)
SERVICE = "envoy.service.auth.v3.Authorization"
__all__ = ["DECISION_HEADER", "SERVICE", "AuthorizationServicer", "start_ext_authz"]
TRACEBACKS_KEPT = 256  # distinct failure sites whose traceback has been logged


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, store: PolicyStore, identities: IdentityCheck | None = None, *,
                 metrics: reasons.AuthzMetrics | None = None, verbose: bool = False) -> None:
        self.store = store
        self._identities = identities or NoIdentityCheck()
        self._metrics = metrics or reasons.NoMetrics()
        self._responses = Responses(verbose=verbose)
        self._logged: set[tuple[str, str, int]] = set()
        self._logged_lock = threading.Lock()

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            verdict = self._decide(request)
            response = self._responses.of(verdict)
            self._metrics.authz_decision(verdict.decision, verdict.reason)
            if log.isEnabledFor(logging.DEBUG):
                attrs = request.attributes
                path = attrs.request.http.path.split("?", 1)[0]  # a query may carry secrets
                log.debug("ext_authz %s (%s) %s → %s: %s", verdict.decision, verdict.reason,
                          attrs.source.principal or attrs.source.address.socket_address.address,
                          path or attrs.destination.address.socket_address.port_value,
                          verdict.detail)
            return response
        except Exception as exc:  # noqa: BLE001 - fail closed: a check not finished is denied
            reason = reasons.deny_reason_for(exc)
            if reason == reasons.INTERNAL:
                self._failed(exc)
                return self._responses.internal
            with contextlib.suppress(Exception):  # counting may not fail the answer either
                self._metrics.authz_decision(reasons.DENY, reason)
            return self._responses.of(Verdict.deny(reason, str(exc)))

    def _decide(self, request: Any) -> Verdict:
        attrs = request.attributes
        refusal = self._identities.refusal(attrs.source.principal or None, attrs.source.certificate)
        if refusal is not None:
            return Verdict.deny(refusal.reason, refusal.detail)
        parsed = check_request_to_authz(request)
        if parsed is None:  # not the plain shape: the general path, with its validation
            # An Invalid (InvalidRequest) is denied as request-unusable by the table.
            parsed, _ = parse_request(check_request_to_json(request))
        return Verdict.of(self.store.check(parsed))

    def _failed(self, exc: Exception) -> None:
        """Counted every time; the traceback logged once per failure site (a caller that
        triggers the same failure again and again cannot flood the log), only in the log.
        Neither may fail the answer, which stays DENY."""
        with contextlib.suppress(Exception):
            frame = exc.__traceback__
            while frame is not None and frame.tb_next is not None:
                frame = frame.tb_next
            site = (type(exc).__name__, frame.tb_frame.f_code.co_filename if frame else "",
                    frame.tb_lineno if frame else 0)
            with self._logged_lock:
                first = site not in self._logged and len(self._logged) < TRACEBACKS_KEPT
                if first:
                    self._logged.add(site)
            if first:
                log.error("ext_authz: a check failed and was denied (reason internal); the same "
                          "failure is logged again only at DEBUG", exc_info=exc)
            else:
                log.debug("ext_authz: a check failed and was denied", exc_info=exc)
        with contextlib.suppress(Exception):
            self._metrics.authz_decision(reasons.DENY, reasons.INTERNAL)


def start_ext_authz(addr: str, store: PolicyStore, identities: IdentityCheck | None = None,
                    *, threads: int = 8, metrics: reasons.AuthzMetrics | None = None,
                    verbose: bool = False, credentials: grpc.ServerCredentials | None = None,
                    options: Sequence[tuple[str, int]] = (),
                    ) -> tuple[grpc.Server, int]:
    """Serve Check on `addr` (port 0: any free port); returns the server and its port.

    grpc's synchronous server with a thread pool, not grpc.aio: a check is pure computation on
    in-memory state, and measured on this workload (scripts/bench-authz) the thread-pool
    server spends about a quarter less CPU per call than the asyncio one."""
    server = grpc.server(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ext-authz"),
                         interceptors=[DecodeGuard()], options=list(options))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        AuthorizationServicer(store, identities, metrics=metrics, verbose=verbose), server)
    if credentials is None:
        port = server.add_insecure_port(addr)
    else:
        port = server.add_secure_port(addr, credentials)
    if port == 0:
        raise OSError(f"cannot listen for ext_authz on {addr}")
    server.start()
    log.info("ext_authz (Envoy Authorization/Check) listening on port %d (%s)", port,
             "plaintext" if credentials is None else "TLS, client certificate required")
    return server, port
