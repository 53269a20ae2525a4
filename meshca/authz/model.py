"""AuthorizationPolicy as meshca holds it: immutable, validated, independent of YAML or JSON.

Field names inside sources, operations and conditions stay Istio's (`ipBlocks`, `notPaths`) so
that explanations and errors point at the very field a user wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

API_VERSIONS = ("security.istio.io/v1", "security.istio.io/v1beta1")
KIND = "AuthorizationPolicy"
DRY_RUN_ANNOTATION = "istio.io/dry-run"

SOURCE_FIELDS = ("principals", "requestPrincipals", "namespaces", "ipBlocks", "remoteIpBlocks",
                 "serviceAccounts")
OPERATION_FIELDS = ("hosts", "ports", "methods", "paths")
# Only an HTTP request carries these; over TCP they are unavailable (docs/contracts.md §5).
HTTP_ONLY_FIELDS = frozenset({"requestPrincipals", "notRequestPrincipals", "hosts", "notHosts",
                              "methods", "notMethods", "paths", "notPaths"})


def negated(name: str) -> str:
    """`principals` → `notPrincipals`."""
    return "not" + name[0].upper() + name[1:]


class Action(StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"
    AUDIT = "AUDIT"
    CUSTOM = "CUSTOM"


@dataclass(frozen=True, slots=True)
class Match:
    """One `source` or `operation`: field name → values, only the fields that were set."""

    fields: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Condition:
    key: str
    values: tuple[str, ...]
    not_values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rule:
    sources: tuple[Match, ...] | None  # `from`; None when absent
    operations: tuple[Match, ...] | None  # `to`
    conditions: tuple[Condition, ...]  # `when`


@dataclass(frozen=True, slots=True)
class AuthorizationPolicy:
    namespace: str
    name: str
    action: Action
    rules: tuple[Rule, ...]  # `spec: {}` is no rules: an ALLOW that matches nothing
    selector: Mapping[str, str] | None = None  # matchLabels
    provider: str | None = None  # CUSTOM only
    dry_run: bool = False
    targets_refs: bool = False  # targetRef(s): a Gateway or Service, never a sidecar workload
    document: Mapping[str, Any] = field(default_factory=dict, compare=False)  # as received

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class MeshConfig:
    """What Istio's MeshConfig says that decisions depend on."""

    root_namespace: str = "istio-system"
    trust_domain: str = "cluster.local"
    trust_domain_aliases: tuple[str, ...] = ()
    # What each CUSTOM provider would answer ("ALLOW" or "DENY"): meshca cannot ask it, so a
    # provider not listed here denies, as Istio fails closed for an unknown provider.
    extension_providers: Mapping[str, str] = field(default_factory=dict)
