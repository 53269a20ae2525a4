"""AuthorizationPolicy objects (YAML or JSON, already decoded) → validated `AuthorizationPolicy`.

Istio's own validation rules, each refusal naming the field path (`spec.rules[0].to[0].operation.
ports[1]`) and the reason. Every problem is collected before refusing, so one round trip shows all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from meshca.authz.conditions import ValueKind, key_spec
from meshca.authz.errors import FieldError, PolicyInvalid
from meshca.authz.model import (
    API_VERSIONS,
    DRY_RUN_ANNOTATION,
    KIND,
    OPERATION_FIELDS,
    SOURCE_FIELDS,
    Action,
    AuthorizationPolicy,
    Condition,
    Match,
    Rule,
    negated,
)
from meshca.authz.validation import (
    check_ip,
    check_label,
    check_name,
    check_namespace,
    check_path_template,
    check_port,
    check_service_account,
)

_TOP = {"apiVersion", "kind", "metadata", "spec", "status"}
_SPEC = {"selector", "targetRef", "targetRefs", "action", "provider", "rules"}
_RULE = {"from", "to", "when"}
_CONDITION = {"key", "values", "notValues"}
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}  # Go's strconv.ParseBool, as Istio reads it
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}
Check = Callable[[str], str | None]
_SOURCE_CHECKS: dict[str, Check] = {"ipBlocks": check_ip, "remoteIpBlocks": check_ip,
                                    "serviceAccounts": check_service_account}
_OPERATION_CHECKS: dict[str, Check] = {"ports": check_port, "paths": check_path_template}
_KIND_CHECKS: dict[ValueKind, Check] = {ValueKind.IP: check_ip, ValueKind.PORT: check_port,
                                        ValueKind.SERVICE_ACCOUNT: check_service_account}
# CUSTOM policies cannot use these (Istio: "not supported with CUSTOM action").
_NOT_WITH_CUSTOM = frozenset({"namespaces", "serviceAccounts", "principals", "requestPrincipals"})


class _Errors:
    def __init__(self) -> None:
        self.found: list[FieldError] = []

    def add(self, path: str, message: str) -> None:
        self.found.append(FieldError(path, message))

    def unknown(self, value: Mapping[str, Any], known: set[str], path: str) -> None:
        for name in sorted(set(value) - known, key=str):
            self.add(f"{path}.{name}", "unknown field")


def parse_policy(document: object, *, namespace: str | None = None) -> AuthorizationPolicy:
    """Validate one decoded object. `namespace` fills a missing metadata.namespace (as kubectl
    does with the current namespace); PolicyInvalid lists every problem found."""
    errors = _Errors()
    policy = _policy(document, namespace, errors)
    if errors.found or policy is None:
        raise PolicyInvalid(errors.found or [FieldError("", "not an AuthorizationPolicy")])
    return policy


def _policy(doc: object, default_ns: str | None, errors: _Errors) -> AuthorizationPolicy | None:
    if not isinstance(doc, Mapping):
        errors.add("", "must be an object")
        return None
    errors.unknown(doc, _TOP, "")
    if doc.get("apiVersion") not in API_VERSIONS:
        errors.add("apiVersion", f"must be one of {', '.join(API_VERSIONS)}")
    if doc.get("kind") != KIND:
        errors.add("kind", f"must be {KIND}")
    name, namespace, dry_run = _metadata(doc.get("metadata"), default_ns, errors)
    spec = doc.get("spec", {})
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        errors.add("spec", "must be an object")
        return None
    errors.unknown(spec, _SPEC, "spec")
    action = _action(spec.get("action"), errors)
    selector = _selector(spec, errors)
    provider = _provider(spec, action, errors)
    raw_rules = spec.get("rules")
    if action is Action.CUSTOM and raw_rules is None:
        errors.add("spec.rules", "CUSTOM action without `rules` is meaningless as it will never be "
                   "triggered; add an empty rule `{}` to trigger it for every request")
    if action is Action.DENY and raw_rules is None:
        errors.add("spec.rules", "DENY action without `rules` is meaningless as it will never be "
                   "triggered; add an empty rule `{}` to trigger it for every request")
    rules = _rules(raw_rules, action, namespace or "", errors)
    if errors.found or name is None or namespace is None or action is None:
        return None
    return AuthorizationPolicy(
        namespace=namespace, name=name, action=action, rules=rules, selector=selector,
        provider=provider, dry_run=dry_run,
        targets_refs=spec.get("targetRef") is not None or spec.get("targetRefs") is not None,
        document=doc)


def _metadata(meta: object, default_ns: str | None, errors: _Errors,
              ) -> tuple[str | None, str | None, bool]:
    if not isinstance(meta, Mapping):
        errors.add("metadata", "must be an object with a name")
        return None, None, False
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        errors.add("metadata.name", "required")
        name = None
    elif reason := check_name(name):
        errors.add("metadata.name", reason)
    namespace = meta.get("namespace", default_ns)
    if not isinstance(namespace, str) or not namespace:
        errors.add("metadata.namespace", "required")
        namespace = None
    elif reason := check_namespace(namespace):
        errors.add("metadata.namespace", reason)
    annotations = meta.get("annotations") or {}
    dry_run = False
    if not isinstance(annotations, Mapping):
        errors.add("metadata.annotations", "must be an object of strings")
    elif DRY_RUN_ANNOTATION in annotations:
        value = annotations[DRY_RUN_ANNOTATION]
        # A list or object here is the author's mistake, not a TypeError (a set lookup hashes).
        if not isinstance(value, str | bool) or value not in _TRUE | _FALSE:
            errors.add(f"metadata.annotations[{DRY_RUN_ANNOTATION}]", 'must be "true" or "false"')
        dry_run = isinstance(value, str | bool) and value in _TRUE
    return name, namespace, dry_run


def _action(value: object, errors: _Errors) -> Action | None:
    if value is None:
        return Action.ALLOW
    if isinstance(value, str) and value in Action.__members__:
        return Action(value)
    errors.add("spec.action", "must be ALLOW, DENY, AUDIT or CUSTOM")
    return None


def _selector(spec: Mapping[str, Any], errors: _Errors) -> Mapping[str, str] | None:
    selector = spec.get("selector")
    if selector is None:
        return None
    if spec.get("targetRef") is not None or spec.get("targetRefs") is not None:
        errors.add("spec.selector", "only one of targetRefs or workloadSelector can be set")
    if not isinstance(selector, Mapping):
        errors.add("spec.selector", "must be an object")
        return None
    errors.unknown(selector, {"matchLabels"}, "spec.selector")
    labels = selector.get("matchLabels") or {}
    if not isinstance(labels, Mapping):
        errors.add("spec.selector.matchLabels", "must be an object of strings")
        return None
    for key, value in labels.items():
        path = f"spec.selector.matchLabels[{key}]"
        if not isinstance(key, str) or not isinstance(value, str):
            errors.add(path, "label keys and values must be strings")
        elif reason := check_label(key, value):
            errors.add(path, reason)
    return dict(labels) if labels else None


def _provider(spec: Mapping[str, Any], action: Action | None, errors: _Errors) -> str | None:
    provider = spec.get("provider")
    if provider is not None and action is not Action.CUSTOM:
        errors.add("spec.provider", f"`provider` must not be set with action {action}")
        return None
    if action is not Action.CUSTOM or spec.get("rules") is None:
        return None
    name = provider.get("name") if isinstance(provider, Mapping) else None
    if not isinstance(name, str) or not name:
        errors.add("spec.provider.name", "must not be empty with action CUSTOM")
        return None
    if isinstance(provider, Mapping):
        errors.unknown(provider, {"name"}, "spec.provider")
    return name


def _rules(raw: object, action: Action | None, namespace: str, errors: _Errors) -> tuple[Rule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.add("spec.rules", "must be a list")
        return ()
    rules: list[Rule] = []
    for index, item in enumerate(raw):
        path = f"spec.rules[{index}]"
        if not isinstance(item, Mapping):
            errors.add(path, "`rule` must be an object")
            continue
        errors.unknown(item, _RULE, path)
        sources = _matches(item, "from", "source", SOURCE_FIELDS, _SOURCE_CHECKS, action, path, errors)
        operations = _matches(item, "to", "operation", OPERATION_FIELDS, _OPERATION_CHECKS, action,
                              path, errors)
        if sources:
            _service_accounts_alone(sources, path, errors)
        conditions = _conditions(item.get("when"), action, f"{path}.when", errors)
        rules.append(Rule(sources, operations, conditions))
    return tuple(rules)


def _matches(rule: Mapping[str, Any], list_name: str, item_name: str, names: tuple[str, ...],
             checks: Mapping[str, Check], action: Action | None, rule_path: str, errors: _Errors,
             ) -> tuple[Match, ...] | None:
    raw = rule.get(list_name)
    path = f"{rule_path}.{list_name}"
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        errors.add(path, f"`{list_name}` must be a non-empty list")
        return None
    matches: list[Match] = []
    allowed = {n for name in names for n in (name, negated(name))}
    for index, entry in enumerate(raw):
        entry_path = f"{path}[{index}]"
        body = entry.get(item_name) if isinstance(entry, Mapping) else None
        if not isinstance(body, Mapping):
            errors.add(f"{entry_path}.{item_name}", f"`{list_name}.{item_name}` must be an object")
            continue
        errors.unknown(entry, {item_name}, entry_path)
        errors.unknown(body, allowed, f"{entry_path}.{item_name}")
        fields: dict[str, tuple[str, ...]] = {}
        for name in sorted(allowed & set(body)):
            field_path = f"{entry_path}.{item_name}.{name}"
            values = _strings(body[name], field_path, checks.get(_base(name)), errors)
            if action is Action.CUSTOM and _base(name) in _NOT_WITH_CUSTOM:
                errors.add(field_path, f"{name} is currently not supported with CUSTOM action")
            if values:
                fields[name] = values
        if not allowed & set(body):
            errors.add(f"{entry_path}.{item_name}", f"`{list_name}.{item_name}` must not be empty")
        matches.append(Match(fields))
    return tuple(matches)


def _base(name: str) -> str:
    """`notIpBlocks` → `ipBlocks`."""
    if name.startswith("not") and name[3:4].isupper():
        return name[3].lower() + name[4:]
    return name


def _service_accounts_alone(sources: tuple[Match, ...], rule_path: str, errors: _Errors) -> None:
    for index, source in enumerate(sources):
        names = {_base(n) for n in source.fields}
        if "serviceAccounts" in names and names & {"principals", "namespaces"}:
            errors.add(f"{rule_path}.from[{index}].source.serviceAccounts",
                       "cannot be set together with namespaces or principals")


def _strings(raw: object, path: str, check: Check | None, errors: _Errors) -> tuple[str, ...]:
    if not isinstance(raw, list):
        errors.add(path, "must be a list of strings")
        return ()
    values: list[str] = []
    for index, value in enumerate(raw):
        item = f"{path}[{index}]"
        if not isinstance(value, str):
            hint = f' (quote it: "{value}")' if isinstance(value, int) else ""
            errors.add(item, f"must be a string{hint}")
        elif not value:
            errors.add(item, "empty value not allowed")
        elif check and (reason := check(value)):
            errors.add(item, reason)
        else:
            values.append(value)
    return tuple(values)


def _conditions(raw: object, action: Action | None, path: str, errors: _Errors,
                ) -> tuple[Condition, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.add(path, "must be a list")
        return ()
    conditions: list[Condition] = []
    for index, item in enumerate(raw):
        item_path = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            errors.add(item_path, "when field cannot be null")
            continue
        errors.unknown(item, _CONDITION, item_path)
        key = item.get("key")
        if not isinstance(key, str) or not key:
            errors.add(f"{item_path}.key", "`key` must not be empty")
            continue
        try:
            spec = key_spec(key)
        except ValueError as exc:
            errors.add(f"{item_path}.key", str(exc))
            continue
        if action is Action.CUSTOM and (key in ("source.namespace", "source.serviceAccount",
                                                "source.principal") or key.startswith("request.auth.")):
            errors.add(f"{item_path}.key", f"{key} is currently not supported with CUSTOM action")
        check = _KIND_CHECKS.get(spec.kind)
        values = _strings(item.get("values") or [], f"{item_path}.values", check, errors)
        not_values = _strings(item.get("notValues") or [], f"{item_path}.notValues", check, errors)
        if not item.get("values") and not item.get("notValues"):
            errors.add(item_path, f"at least one of `values` or `notValues` must be set for key {key}")
        conditions.append(Condition(key, values, not_values))
    return tuple(conditions)
