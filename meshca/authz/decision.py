"""The answer to "may this request pass?", with what decided it and, on request, why.

    {"decision": "ALLOW"|"DENY", "policy": "ns/name"|null, "rule": index|null,
     "action": "ALLOW"|"DENY"|"CUSTOM"|null, "reason": str,
     "dry_run": [what each dry-run policy would have done], "explain": [per policy considered]}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class DryRunResult:
    policy: str
    action: str
    matched: bool
    rule: int | None
    decision_if_enforced: str  # the decision had this policy been enforced too

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "action": self.action, "matched": self.matched,
                "rule": self.rule, "decision_if_enforced": self.decision_if_enforced}


@dataclass(frozen=True, slots=True)
class PolicyExplanation:
    policy: str
    action: str
    applies: bool
    matched: bool
    rule: int | None  # the first rule that matched
    not_matched: tuple[str | None, ...]  # per rule: the first field that did not match
    note: str | None = None  # why it does not apply, or why it cannot change the decision
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "action": self.action, "dry_run": self.dry_run,
                "applies": self.applies, "matched": self.matched, "rule": self.rule,
                "not_matched": list(self.not_matched), "note": self.note}


@dataclass(frozen=True, slots=True)
class Decision:
    decision: str  # "ALLOW" | "DENY"
    reason: str
    policy: str | None = None
    rule: int | None = None
    action: str | None = None  # the action of the deciding policy
    dry_run: tuple[DryRunResult, ...] = ()
    explain: tuple[PolicyExplanation, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.decision == "ALLOW"

    def to_json(self) -> dict[str, Any]:
        return {"decision": self.decision, "policy": self.policy, "rule": self.rule,
                "action": self.action, "reason": self.reason,
                "dry_run": [d.to_json() for d in self.dry_run],
                "explain": [e.to_json() for e in self.explain]}
