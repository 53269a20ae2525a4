"""Deciding one request against a compiled policy set, in Istio's order.

CUSTOM first (a matching CUSTOM rule hands the request to its provider; meshca takes the
provider's answer from the mesh config, and an unknown provider denies), then DENY (any match
denies), then ALLOW (with no ALLOW policy applying the request passes; otherwise one ALLOW rule
must match). AUDIT and dry-run policies are evaluated too but never change the decision.
"""

from __future__ import annotations

from meshca.authz.compile import CompiledPolicy
from meshca.authz.decision import Decision, DryRunResult
from meshca.authz.dry_run import would_decide
from meshca.authz.explain import explain
from meshca.authz.index import Plan, PolicySet
from meshca.authz.model import Action
from meshca.authz.request import AuthzRequest

ALLOW, DENY = "ALLOW", "DENY"


def evaluate(policies: PolicySet, request: AuthzRequest, *, with_explain: bool = False) -> Decision:
    plan = policies.plan(request.destination_namespace, request.destination_labels)
    decision = _decide(policies, plan, request)
    if not plan.shadows and not with_explain:
        return decision
    enforced = list(plan.enforced)
    dry_run = tuple(_shadow(policies, enforced, p, request, decision) for p in plan.shadows)
    if not dry_run and not with_explain:
        return decision
    return Decision(decision.decision, decision.reason, decision.policy, decision.rule,
                    decision.action, dry_run,
                    explain(policies, request, list(plan.applicable)) if with_explain else ())


def _decide(policies: PolicySet, plan: Plan, request: AuthzRequest) -> Decision:
    if plan.custom:
        return _decide_with_custom(policies, plan, request)
    http = request.protocol == "HTTP"
    for policy in plan.deny:
        if (rule := (policy.http_first if http else policy.tcp_first)(request)) is not None:
            return policy.decisions[rule] or _matched(policy, rule)
    if not plan.allow:
        return plan.no_allow
    for policy in plan.allow:
        if (rule := (policy.http_first if http else policy.tcp_first)(request)) is not None:
            return policy.decisions[rule] or _matched(policy, rule)
    return plan.none_allowed


def _matched(policy: CompiledPolicy, rule: int, note: str = "") -> Decision:
    if policy.action is Action.DENY:
        return Decision(DENY, f"denied by DENY policy {policy.key} rule {rule}" + note, policy.key,
                        rule, Action.DENY.value)
    return Decision(ALLOW, f"allowed by ALLOW policy {policy.key} rule {rule}" + note,
                    policy.key, rule, Action.ALLOW.value)


def _decide_with_custom(policies: PolicySet, plan: Plan, request: AuthzRequest) -> Decision:
    custom_note = ""
    for policy in plan.custom:
        if (rule := policy.first_match(request)) is not None:
            provider = policy.policy.provider or ""
            verdict = policies.mesh.extension_providers.get(provider, DENY)
            if verdict == DENY:
                return Decision(DENY, f"denied by CUSTOM policy {policy.key} rule {rule}: provider "
                                f"{provider!r} denies", policy.key, rule, Action.CUSTOM.value)
            custom_note = f" (CUSTOM policy {policy.key}: provider {provider!r} allowed)"
            break  # one provider per workload, as in Istio
    for policy in plan.deny:
        if (rule := policy.first_match(request)) is not None:
            return _matched(policy, rule)  # a DENY's reason does not mention the provider
    if not plan.allow:
        return Decision(ALLOW, plan.no_allow.reason + custom_note)
    for policy in plan.allow:
        if (rule := policy.first_match(request)) is not None:
            return _matched(policy, rule, custom_note)
    return Decision(DENY, plan.none_allowed.reason + custom_note)


def _shadow(policies: PolicySet, enforced: list[CompiledPolicy], shadow: CompiledPolicy,
            request: AuthzRequest, actual: Decision) -> DryRunResult:
    rule = shadow.first_match(request)
    return DryRunResult(shadow.key, shadow.action.value, rule is not None, rule,
                        would_decide(policies, enforced, shadow, rule, request, actual))
