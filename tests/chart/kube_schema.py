"""Strict checks of rendered manifests against the Kubernetes API schema.

The `kubernetes` client's models (generated from the API server's OpenAPI document) are
pydantic models that forbid unknown fields and check types and required fields. They also accept
Python attribute names (`security_context`) where the API only knows `securityContext`, so the
walk below additionally insists that every key is the API's own spelling.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import kubernetes.client as k8s
from pydantic import BaseModel, ConfigDict, Field

# (apiVersion, kind) -> model, and whether the kind is cluster-scoped. Anything else the chart
# renders is an error: a kind nobody checked is a kind nobody reviewed.
KINDS: dict[tuple[str, str], tuple[type[Any], bool]] = {
    ("v1", "ServiceAccount"): (k8s.V1ServiceAccount, False),
    ("v1", "Service"): (k8s.V1Service, False),
    ("v1", "PersistentVolumeClaim"): (k8s.V1PersistentVolumeClaim, False),
    ("apps/v1", "Deployment"): (k8s.V1Deployment, False),
    ("apps/v1", "DaemonSet"): (k8s.V1DaemonSet, False),
    ("policy/v1", "PodDisruptionBudget"): (k8s.V1PodDisruptionBudget, False),
    ("networking.k8s.io/v1", "NetworkPolicy"): (k8s.V1NetworkPolicy, False),
    ("v1", "Secret"): (k8s.V1Secret, False),
    ("v1", "ConfigMap"): (k8s.V1ConfigMap, False),
    ("rbac.authorization.k8s.io/v1", "Role"): (k8s.V1Role, False),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): (k8s.V1RoleBinding, False),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): (k8s.V1ClusterRole, True),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): (k8s.V1ClusterRoleBinding, True),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)


class _NamespaceSelector(_Strict):
    match_names: list[str] | None = Field(default=None, alias="matchNames")
    any: bool | None = None


class _Endpoint(_Strict):
    port: str
    path: str | None = None
    scheme: Literal["http", "https"] | None = None
    interval: str | None = Field(default=None, pattern=r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?"
                                                        r"(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
                                                        r"(([0-9]+)ms)?)$")


class _ServiceMonitorSpec(_Strict):
    selector: dict[str, Any]
    namespace_selector: _NamespaceSelector | None = Field(default=None, alias="namespaceSelector")
    endpoints: list[_Endpoint]


class _ServiceMonitor(_Strict):
    """The part of Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1) the chart uses.

    The kubernetes client has no model for this custom resource; these fields and types follow
    the operator's CRD, and like the models above they refuse anything else.
    """

    api_version: Literal["monitoring.coreos.com/v1"] = Field(alias="apiVersion")
    kind: Literal["ServiceMonitor"]
    metadata: dict[str, Any]
    spec: _ServiceMonitorSpec


class _Rule(_Strict):
    alert: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    expr: str = Field(min_length=1)
    for_: str | None = Field(default=None, alias="for", pattern=r"^[0-9]+(ms|s|m|h|d|w|y)$")
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class _RuleGroup(_Strict):
    name: str
    rules: list[_Rule]


class _PrometheusRuleSpec(_Strict):
    groups: list[_RuleGroup]


class _PrometheusRule(_Strict):
    """The part of Prometheus Operator's PrometheusRule (monitoring.coreos.com/v1) the chart
    uses: alerting rules only."""

    api_version: Literal["monitoring.coreos.com/v1"] = Field(alias="apiVersion")
    kind: Literal["PrometheusRule"]
    metadata: dict[str, Any]
    spec: _PrometheusRuleSpec


class SchemaError(AssertionError):
    pass


def check_object(obj: dict[str, Any], namespace: str) -> None:
    """Raise SchemaError when `obj` is not a valid object of its kind as the API server reads it."""
    api_version, kind = str(obj.get("apiVersion")), str(obj.get("kind"))
    where = f"{kind} {obj.get('metadata', {}).get('name')}"
    if (api_version, kind) == ("monitoring.coreos.com/v1", "ServiceMonitor"):
        _validate(_ServiceMonitor, obj, where)
        _walk(k8s.V1ObjectMeta, obj["metadata"], f"{where}.metadata")
        _walk(k8s.V1LabelSelector, obj["spec"]["selector"], f"{where}.spec.selector")
        _check_namespace(obj, namespace, cluster_scoped=False)
        return
    if (api_version, kind) == ("monitoring.coreos.com/v1", "PrometheusRule"):
        _validate(_PrometheusRule, obj, where)
        _walk(k8s.V1ObjectMeta, obj["metadata"], f"{where}.metadata")
        _check_namespace(obj, namespace, cluster_scoped=False)
        return
    if (api_version, kind) not in KINDS:
        raise SchemaError(f"{where}: {api_version} {kind} is not a kind this chart is checked for")
    model, cluster_scoped = KINDS[(api_version, kind)]
    _validate(model, obj, where)
    _walk(model, obj, where)
    _check_namespace(obj, namespace, cluster_scoped=cluster_scoped)


def _validate(model: type[Any], obj: dict[str, Any], where: str) -> None:
    try:
        if issubclass(model, _Strict):
            model.model_validate(obj)
        else:
            model.from_dict(obj)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise SchemaError(f"{where}: {exc}") from None


def _check_namespace(obj: dict[str, Any], namespace: str, *, cluster_scoped: bool) -> None:
    got = obj["metadata"].get("namespace")
    if cluster_scoped and got is not None:
        raise SchemaError(f"{obj['kind']} is cluster-scoped but has namespace {got!r}")
    if not cluster_scoped and got != namespace:
        raise SchemaError(f"{obj['kind']} {obj['metadata']['name']} is in {got!r}, not {namespace!r}")


_LIST = re.compile(r"^List\[(.+)\]$")
_DICT = re.compile(r"^Dict\[str, (.+)\]$")


def _walk(model: type[Any], value: Any, where: str) -> None:
    """Every key of `value` must be a wire name (attribute_map value) of `model`, recursively."""
    if not isinstance(value, dict):
        raise SchemaError(f"{where}: expected an object for {model.__name__}, got {type(value).__name__}")
    wire_to_attr = {wire: attr for attr, wire in model.attribute_map.items()}
    for key, item in value.items():
        if key not in wire_to_attr:
            raise SchemaError(f"{where}: unknown field {key!r} for {model.__name__}")
        _walk_type(model.openapi_types[wire_to_attr[key]], item, f"{where}.{key}")


def _walk_type(type_name: str, value: Any, where: str) -> None:
    if value is None:
        return
    if match := _LIST.match(type_name):
        if not isinstance(value, list):
            raise SchemaError(f"{where}: expected a list, got {type(value).__name__}")
        for index, item in enumerate(value):
            _walk_type(match.group(1), item, f"{where}[{index}]")
    elif match := _DICT.match(type_name):
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: expected a map, got {type(value).__name__}")
        for key, item in value.items():
            _walk_type(match.group(1), item, f"{where}.{key}")
    elif hasattr(k8s, type_name):
        _walk(getattr(k8s, type_name), value, where)
    # Scalars and `object` (int-or-string, quantities) were type-checked by the model already.
