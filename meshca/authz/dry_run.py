"""What a dry-run policy would have done: the decision had it been enforced with the others."""

from __future__ import annotations

from meshca.authz.compile import CompiledPolicy
from meshca.authz.decision import Decision
from meshca.authz.index import PolicySet
from meshca.authz.model import Action
from meshca.authz.request import AuthzRequest


def would_decide(policies: PolicySet, enforced: list[CompiledPolicy], shadow: CompiledPolicy,
                 rule: int | None, request: AuthzRequest, actual: Decision) -> str:
    stopped_before_allow = actual.action in (Action.CUSTOM.value, Action.DENY.value)
    if shadow.action is Action.AUDIT or stopped_before_allow:
        return actual.decision  # AUDIT never decides; an enforced CUSTOM/DENY already denied
    if shadow.action is Action.DENY:
        return "DENY" if rule is not None else actual.decision
    if shadow.action is Action.CUSTOM:
        if rule is None:
            return actual.decision
        verdict = policies.mesh.extension_providers.get(shadow.policy.provider or "", "DENY")
        return "DENY" if verdict == "DENY" else actual.decision
    # ALLOW: with it enforced an ALLOW policy certainly applies, so one ALLOW rule must match.
    if rule is not None:
        return "ALLOW"
    others = any(p.action is Action.ALLOW and p.first_match(request) is not None for p in enforced)
    return "ALLOW" if others else "DENY"
