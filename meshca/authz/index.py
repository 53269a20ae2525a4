"""The compiled policy set: indexed by namespace and selector, immutable once built.

Finding the policies that apply to a workload costs two dictionary lookups per namespace
(its own and the root) plus one per workload label, however many policies the mesh holds.
A new set is built beside the old one and swapped in by assigning one reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from meshca.authz.compile import CompiledPolicy, compile_policy
from meshca.authz.decision import Decision
from meshca.authz.model import Action, AuthorizationPolicy, MeshConfig


@dataclass(frozen=True, slots=True)
class _Namespace:
    wide: tuple[CompiledPolicy, ...]  # no selector: every workload of the namespace
    # A selector is filed under one of its labels; the rest are checked on lookup.
    by_label: Mapping[tuple[str, str], tuple[CompiledPolicy, ...]]
    every: tuple[CompiledPolicy, ...]  # for explanations: all of them, selector or not

    def applicable(self, labels: Mapping[str, str]) -> list[CompiledPolicy]:
        found = list(self.wide)
        selected = False
        for item in labels.items():
            for policy in self.by_label.get(item, ()):
                selector = policy.policy.selector
                assert selector is not None
                if all(labels.get(k) == v for k, v in selector.items()):
                    found.append(policy)
                    selected = True
        if selected:
            found.sort(key=lambda p: p.ordinal)
        return found


_EMPTY = _Namespace((), {}, ())


@dataclass(frozen=True, slots=True)
class Plan:
    """The policies applying to one workload, split once by what evaluation does with them."""

    applicable: tuple[CompiledPolicy, ...]  # in evaluation order (explanations)
    enforced: tuple[CompiledPolicy, ...]  # not dry-run
    custom: tuple[CompiledPolicy, ...]  # enforced, by action
    deny: tuple[CompiledPolicy, ...]
    allow: tuple[CompiledPolicy, ...]
    shadows: tuple[CompiledPolicy, ...]  # dry-run: evaluated, never enforced
    no_allow: Decision  # the answer when nothing denies and no ALLOW policy applies
    none_allowed: Decision  # ... and when ALLOW policies apply but no rule of theirs matches


def make_plan(applicable: Iterable[CompiledPolicy]) -> Plan:
    ordered = tuple(applicable)
    enforced = tuple(p for p in ordered if not p.policy.dry_run)
    allow = tuple(p for p in enforced if p.action is Action.ALLOW)
    count = len(allow)
    return Plan(
        ordered, enforced,
        tuple(p for p in enforced if p.action is Action.CUSTOM),
        tuple(p for p in enforced if p.action is Action.DENY),
        allow,
        tuple(p for p in ordered if p.policy.dry_run),
        Decision("ALLOW", "no ALLOW policy applies to the workload"),
        Decision("DENY", f"no rule of the {count} ALLOW polic{'y' if count == 1 else 'ies'} "
                 "applying to the workload matched"))


PLAN_CACHE_SIZE = 16384  # workloads (namespace + labels) whose plan is kept; then start over


@dataclass(frozen=True, slots=True)
class PolicySet:
    mesh: MeshConfig
    version: int
    policies: tuple[AuthorizationPolicy, ...]
    _namespaces: Mapping[str, _Namespace] = field(repr=False)
    # Plans by (namespace, label items): a workload's plan is worked out on its first request.
    # Entries are immutable and only ever added whole (or all dropped), so readers in other
    # threads see a plan or no plan, never part of one.
    _plans: dict[tuple[str, tuple[tuple[str, str], ...]], Plan] = field(
        default_factory=dict, repr=False, compare=False)
    _plan_cache_size: int = field(default=PLAN_CACHE_SIZE, repr=False, compare=False)

    @classmethod
    def build(cls, policies: Iterable[AuthorizationPolicy], mesh: MeshConfig | None = None,
              version: int = 0, *, plan_cache_size: int = PLAN_CACHE_SIZE) -> PolicySet:
        mesh = mesh or MeshConfig()
        # Evaluation order: root namespace first, then by namespace and name, so that "the
        # policy that decided" never depends on the order policies arrived in.
        ordered = sorted(policies, key=lambda p: (p.namespace != mesh.root_namespace, p.namespace,
                                                  p.name))
        grouped: dict[str, list[CompiledPolicy]] = {}
        for ordinal, policy in enumerate(ordered):
            grouped.setdefault(policy.namespace, []).append(compile_policy(policy, mesh, ordinal))
        return cls(mesh, version, tuple(ordered),
                   {ns: _namespace(compiled) for ns, compiled in grouped.items()},
                   {}, plan_cache_size)

    def with_mesh(self, mesh: MeshConfig) -> PolicySet:
        return self if mesh == self.mesh else PolicySet.build(
            self.policies, mesh, self.version, plan_cache_size=self._plan_cache_size)

    def plan(self, namespace: str, labels: Mapping[str, str]) -> Plan:
        """`applicable(namespace, labels)`, split for evaluation; remembered per workload."""
        key = (namespace, tuple(labels.items()))
        plan = self._plans.get(key)
        if plan is None:
            plan = make_plan(self.applicable(namespace, labels))
            if self._plan_cache_size > 0:
                if len(self._plans) >= self._plan_cache_size:
                    self._plans.clear()
                self._plans[key] = plan
        return plan

    def applicable(self, namespace: str, labels: Mapping[str, str]) -> list[CompiledPolicy]:
        """Every policy that applies to a workload, in evaluation order."""
        found = self._namespaces.get(self.mesh.root_namespace, _EMPTY).applicable(labels)
        if namespace != self.mesh.root_namespace:  # root policies come first by ordinal
            found += self._namespaces.get(namespace, _EMPTY).applicable(labels)
        return found

    def nearby(self, namespace: str) -> list[CompiledPolicy]:
        """Policies of the root namespace and of `namespace`, applying or not (explanations)."""
        seen = {self.mesh.root_namespace, namespace}
        return sorted((p for ns in seen for p in self._namespaces.get(ns, _EMPTY).every),
                      key=lambda p: p.ordinal)

    def __len__(self) -> int:
        return len(self.policies)


def _namespace(compiled: list[CompiledPolicy]) -> _Namespace:
    wide: list[CompiledPolicy] = []
    by_label: dict[tuple[str, str], list[CompiledPolicy]] = {}
    for policy in compiled:
        if policy.policy.targets_refs:
            continue  # a Gateway or Service policy: no sidecar workload is selected by it
        selector = policy.policy.selector
        if not selector:
            wide.append(policy)
        else:
            first = min(selector.items())
            by_label.setdefault(first, []).append(policy)
    return _Namespace(tuple(wide), {k: tuple(v) for k, v in by_label.items()}, tuple(compiled))
