"""Why ext_authz decided as it did: one code per decision, in logs and metrics (and, coarser,
in deny bodies), and the metrics port the server and the identity refresher count into."""

from __future__ import annotations

from typing import Protocol

from meshca.errors import InvalidRequest

ALLOW, DENY = "ALLOW", "DENY"

POLICY = "policy"  # a policy's rule matched (ALLOW or DENY)
NO_POLICY = "no-policy"  # no ALLOW policy applies to the workload: allowed, as in Istio
NO_ALLOW_MATCH = "no-allow-match"  # ALLOW policies apply and none of their rules matched
BLOCKED = "blocked"  # the source SPIFFE ID is blocked
REVOKED = "revoked"  # the source certificate is revoked
TAINTED_ISSUER = "tainted-issuer"  # issued under a CA key marked compromised
CERTIFICATE_UNPARSEABLE = "certificate-unparseable"  # a source.certificate that is no certificate
IDENTITY_STATE_STALE = "identity-state-stale"  # no recent enough block/revocation snapshot
REQUEST_UNUSABLE = "request-unusable"  # attributes meshca cannot read
INTERNAL = "internal"  # meshca failed while deciding

# Every (decision, reason) a check can end with; the metric's label pairs, in this order.
DECISIONS: tuple[tuple[str, str], ...] = (
    (ALLOW, POLICY), (ALLOW, NO_POLICY),
    (DENY, POLICY), (DENY, NO_ALLOW_MATCH), (DENY, BLOCKED), (DENY, REVOKED),
    (DENY, TAINTED_ISSUER), (DENY, CERTIFICATE_UNPARSEABLE), (DENY, IDENTITY_STATE_STALE),
    (DENY, REQUEST_UNUSABLE), (DENY, INTERNAL),
)
# What a terse deny body says (the default): whether the caller's identity was refused, and
# whether it was blocked, revoked or issued under a compromised key, is not the caller's
# business; nor is which kind of policy outcome stopped it. The full code goes to the log and
# metrics. Failures to check are named as they are: they are meshca's state, not the caller's.
IDENTITY = "identity"
PUBLIC = {NO_ALLOW_MATCH: POLICY, BLOCKED: IDENTITY, REVOKED: IDENTITY, TAINTED_ISSUER: IDENTITY}


def public(reason: str) -> str:
    return PUBLIC.get(reason, reason)


# ext_authz's one table from meshca's errors (meshca/errors.py) to a DENY reason, by the
# nearest class in the error's MRO. Every error is a DENY: a check that could not finish never
# allows. An error the table does not name is `internal` and its traceback is logged once.
DENY_REASON_FOR: dict[type[Exception], str] = {
    InvalidRequest: REQUEST_UNUSABLE,
}


def deny_reason_for(exc: Exception) -> str:
    for kind in type(exc).__mro__:
        if kind in DENY_REASON_FOR:
            return DENY_REASON_FOR[kind]
    return INTERNAL


# How a background read of the identity state ended: `slow` succeeded, but took longer than
# the refresh interval.
REFRESH_OUTCOMES = ("ok", "slow", "failed")


class AuthzMetrics(Protocol):
    def authz_decision(self, decision: str, reason: str) -> None: ...

    def identity_refresh(self, outcome: str) -> None: ...

    def identity_state_read(self, wall_time: float | None) -> None:
        """The Unix time the current snapshot was read at; None: serving, no snapshot yet."""


class NoMetrics:
    def authz_decision(self, decision: str, reason: str) -> None:
        pass

    def identity_refresh(self, outcome: str) -> None:
        pass

    def identity_state_read(self, wall_time: float | None) -> None:
        pass
