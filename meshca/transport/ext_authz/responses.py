"""Verdicts → CheckResponses.

Terse by default: a 403 body `{"decision":"DENY","reason":"<code>"}` with a coarse code
(`reasons.public`: policy, identity, certificate-unparseable, identity-state-stale,
request-unusable, internal) and an `x-meshca-authz` header saying only ALLOW or DENY, so a
caller learns neither the policy that stopped it nor whether its identity is blocked.
Verbose (`--ext-authz-verbose`, for debugging) adds the policy, rule, action, the full code
and the human reason. The details always reach the log and metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from meshca.authz import Decision
from meshca.transport.ext_authz import reasons

DECISION_HEADER = "x-meshca-authz"
RESPONSE_CACHE_SIZE = 16384  # distinct verdicts whose CheckResponse is kept


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: str  # ALLOW | DENY
    reason: str  # a code from reasons.py
    detail: str  # human words
    policy: str | None = None  # ns/name of the deciding policy
    rule: int | None = None
    action: str | None = None

    @property
    def allowed(self) -> bool:
        return self.decision == reasons.ALLOW

    @classmethod
    def of(cls, decision: Decision) -> Verdict:
        if decision.policy is not None:
            reason = reasons.POLICY
        else:
            reason = reasons.NO_POLICY if decision.allowed else reasons.NO_ALLOW_MATCH
        return cls(decision.decision, reason, decision.reason, decision.policy, decision.rule,
                   decision.action)

    @classmethod
    def deny(cls, reason: str, detail: str) -> Verdict:
        return cls(reasons.DENY, reason, detail)


class Responses:
    """The CheckResponse of each verdict, built once (messages are never mutated after)."""

    def __init__(self, *, verbose: bool = False) -> None:
        self._verbose = verbose
        self._cache: dict[Any, Any] = {}
        # Built before any check: the answer when deciding itself failed.
        self.internal = self.of(Verdict.deny(reasons.INTERNAL, "internal error"))

    def of(self, verdict: Verdict) -> Any:
        key = verdict if self._verbose else (verdict.decision, reasons.public(verdict.reason))
        response = self._cache.get(key)
        if response is None:
            response = self._build(verdict)
            if len(self._cache) >= RESPONSE_CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = response
        return response

    def _build(self, verdict: Verdict) -> Any:
        if self._verbose:
            header = " ".join(str(v) for v in (verdict.decision, verdict.policy, verdict.rule)
                              if v is not None)
            body = {"decision": verdict.decision, "reason": verdict.reason,
                    "policy": verdict.policy, "rule": verdict.rule, "action": verdict.action,
                    "detail": verdict.detail}
            message = verdict.detail
        else:
            header, message = verdict.decision, reasons.public(verdict.reason)
            body = {"decision": verdict.decision, "reason": message}
        decision_header = base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=DECISION_HEADER, value=header))
        if verdict.allowed:
            return external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.OK),
                ok_response=external_auth_pb2.OkHttpResponse(headers=[decision_header]))
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED,
                                     message=message),
            denied_response=external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=http_status_pb2.Forbidden),
                headers=[decision_header, base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key="content-type", value="application/json"))],
                body=json.dumps(body, separators=(",", ":"))))
