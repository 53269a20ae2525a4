"""Why: every policy of the workload's namespace and of the root namespace, applying or not,
with the first field that did not match in each rule (istio/istio#39802: say who denied)."""

from __future__ import annotations

from collections.abc import Mapping

from meshca.authz.compile import CompiledPolicy
from meshca.authz.decision import PolicyExplanation
from meshca.authz.index import PolicySet
from meshca.authz.model import Action
from meshca.authz.request import AuthzRequest


def explain(policies: PolicySet, request: AuthzRequest, applicable: list[CompiledPolicy],
            ) -> tuple[PolicyExplanation, ...]:
    applying = {p.ordinal for p in applicable}
    entries = []
    for policy in policies.nearby(request.destination_namespace):
        if policy.ordinal in applying:
            entries.append(_applying(policy, request))
        else:
            entries.append(PolicyExplanation(
                policy.key, policy.action.value, applies=False, matched=False, rule=None,
                not_matched=(), note=_why_not(policy, request.destination_labels),
                dry_run=policy.policy.dry_run))
    return tuple(entries)


def _applying(policy: CompiledPolicy, request: AuthzRequest) -> PolicyExplanation:
    mismatches = tuple(policy.mismatches(request))
    rule = next((i for i, m in enumerate(mismatches) if m is None), None)
    note = None
    if not policy.policy.rules:
        note = "no rules: matches nothing" + (" (so it denies every request)"
                                              if policy.action is Action.ALLOW else "")
    elif policy.policy.dry_run:
        note = "dry-run: evaluated and reported, never enforced"
    elif policy.action is Action.AUDIT:
        note = "AUDIT: marks the request for auditing, never changes the decision"
    return PolicyExplanation(policy.key, policy.action.value, applies=True, matched=rule is not None,
                             rule=rule, not_matched=mismatches, note=note,
                             dry_run=policy.policy.dry_run)


def _why_not(policy: CompiledPolicy, labels: Mapping[str, str]) -> str:
    if policy.policy.targets_refs:
        return "targets a Gateway or Service (targetRefs), not a sidecar workload"
    selector = policy.policy.selector or {}
    missing = sorted(f"{k}={v}" for k, v in selector.items() if labels.get(k) != v)
    return f"selector does not match the workload's labels: {', '.join(missing)}"
