"""`envoy.service.auth.v3.Authorization/Check` on `--ext-authz-addr` (plaintext gRPC: Envoy
calls it from the same host or over the mesh's own mTLS)."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from meshca.authz import Decision, Invalid, parse_request
from meshca.service.policy_store import PolicyStore
from meshca.transport.ext_authz.attributes import check_request_to_authz, check_request_to_json
from meshca.transport.ext_authz.identity import IdentityCheck, NoIdentityCheck

log = logging.getLogger(__name__)
SERVICE = "envoy.service.auth.v3.Authorization"
DECISION_HEADER = "x-meshca-authz"  # `ALLOW ns/name rule` or `DENY …`: which policy decided
RESPONSE_CACHE_SIZE = 16384  # distinct decisions whose CheckResponse is kept


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, store: PolicyStore, identities: IdentityCheck | None = None) -> None:
        self.store = store
        self._identities = identities or NoIdentityCheck()
        self._responses: dict[tuple[str, str | None, int | None, str | None, str], Any] = {}

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        attrs = request.attributes
        principal = attrs.source.principal or None
        refusal = self._identities.refusal(principal, attrs.source.certificate)
        if refusal is not None:
            return denied({"decision": "DENY", "policy": None, "rule": None, "action": None,
                           "reason": refusal})
        parsed = check_request_to_authz(request)
        if parsed is None:  # not the plain shape: the general path, with its validation
            try:
                parsed, _ = parse_request(check_request_to_json(request))
            except Invalid as exc:  # fail closed: a request meshca cannot read is not allowed
                return denied({"decision": "DENY", "policy": None, "rule": None, "action": None,
                               "reason": f"request attributes unusable: {exc}"})
        return self._respond(self.store.check(parsed))

    def _respond(self, decision: Decision) -> Any:
        """The CheckResponse for a decision; the same decision gets the same (immutable, never
        mutated) message, built once."""
        key = (decision.decision, decision.policy, decision.rule, decision.action, decision.reason)
        response = self._responses.get(key)
        if response is None:
            summary = {"decision": decision.decision, "policy": decision.policy,
                       "rule": decision.rule, "action": decision.action, "reason": decision.reason}
            response = allowed(summary) if decision.allowed else denied(summary)
            if len(self._responses) >= RESPONSE_CACHE_SIZE:
                self._responses.clear()
            self._responses[key] = response
        return response


def _header(summary: dict[str, Any]) -> Any:
    value = " ".join(str(summary[k]) for k in ("decision", "policy", "rule") if summary[k] is not None)
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=DECISION_HEADER, value=value))


def allowed(summary: dict[str, Any]) -> Any:
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=external_auth_pb2.OkHttpResponse(headers=[_header(summary)]))


def denied(summary: dict[str, Any]) -> Any:
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED, message=summary["reason"]),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.Forbidden),
            headers=[_header(summary), base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key="content-type", value="application/json"))],
            body=json.dumps(summary)))


def start_ext_authz(addr: str, store: PolicyStore, identities: IdentityCheck | None = None,
                    *, threads: int = 8) -> tuple[grpc.Server, int]:
    """Serve Check on `addr` (port 0: any free port); returns the server and its port.

    grpc's synchronous server with a thread pool, not grpc.aio: a check is pure computation on
    an in-memory policy set, and measured on this workload (scripts/bench-authz) the thread-pool
    server spends about a quarter less CPU per call than the asyncio one."""
    server = grpc.server(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ext-authz"))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        AuthorizationServicer(store, identities), server)
    port = server.add_insecure_port(addr)
    if port == 0:
        raise OSError(f"cannot listen for ext_authz on {addr}")
    server.start()
    log.info("ext_authz (Envoy Authorization/Check) listening on port %d", port)
    return server, port
