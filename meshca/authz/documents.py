"""Files and bodies holding policies: YAML (one or many `---` documents) or JSON, an object, a
list of them, or a Kubernetes `List` with `items`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from meshca.authz.errors import FieldError, Invalid, PolicyInvalid
from meshca.authz.model import AuthorizationPolicy
from meshca.authz.parse import parse_policy


def load_documents(text: str, source: str = "input") -> list[Any]:
    """Every object in `text`, flattened; PolicyInvalid (with the line) if it cannot be read."""
    stripped = text.lstrip()
    try:
        if stripped.startswith(("{", "[")):
            loaded: list[Any] = [json.loads(text)]
        else:
            loaded = [d for d in yaml.safe_load_all(text) if d is not None]
    except json.JSONDecodeError as exc:
        raise PolicyInvalid([FieldError(source, f"not JSON: {exc.msg} at line {exc.lineno} "
                                                f"column {exc.colno}")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "unreadable"
        raise PolicyInvalid([FieldError(source, f"not YAML: {problem}{where}")]) from None
    documents: list[Any] = []
    for item in loaded:
        documents.extend(_flatten(item))
    return documents


def _flatten(item: Any) -> Iterable[Any]:
    if isinstance(item, list):
        return item
    if isinstance(item, Mapping) and str(item.get("kind", "")).endswith("List") \
            and isinstance(item.get("items"), list):
        return list(item["items"])
    return [item]


def parse_policies(documents: Iterable[Any], *, namespace: str | None = None, prefix: str = "",
                   ) -> list[AuthorizationPolicy]:
    """Validate them all; one PolicyInvalid listing every problem, paths under `prefix[i]`."""
    policies: list[AuthorizationPolicy] = []
    errors: list[FieldError] = []
    seen: dict[str, int] = {}
    for index, document in enumerate(documents):
        try:
            policy = parse_policy(document, namespace=namespace)
        except Invalid as exc:
            errors.extend(exc.prefixed(f"{prefix}[{index}]").errors)
            continue
        if policy.key in seen:
            errors.append(FieldError(f"{prefix}[{index}].metadata.name",
                                     f"{policy.key} is also defined at [{seen[policy.key]}]"))
            continue
        seen[policy.key] = index
        policies.append(policy)
    if errors:
        raise PolicyInvalid(errors)
    return policies
