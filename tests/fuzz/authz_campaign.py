"""The authorization engine on random policies and requests (issue 17, item 1).

Valid pairs: for each policy, the compiled rule functions (`first_match`) agree with the
field-by-field tests (`first_match_slowly`) under two mesh configurations, and the whole set
decides the same with and without remembered plans. Invalid policies (a valid one with one value
replaced by a wrong type or shape): refused with PolicyInvalid naming a field path, never any
other exception. The strategies are those of tests/unit/authz/test_fast_path.py, taken as raw
documents so that they can be broken before parsing."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from meshca.authz import PolicyInvalid, PolicySet, evaluate, parse_policy, parse_request
from meshca.authz.compile import compile_policy
from meshca.authz.model import MeshConfig
from tests.fuzz.campaign import Tally, run_strategy
from tests.unit.authz.test_fast_path import MESH, _rule, requests
from tests.unit.authz.test_properties import NAMESPACES

MESHES = (MeshConfig(), MESH)
ODD_VALUES: list[Any] = [None, 0, -1, 70000, "", "*", "**", "a*b*c", [], {}, [None], {"x": 1}, True,
                         "10.0.0.0/99", "::/200", "\x00", "ns/*/x", "a" * 2000, 1.5, ["GET", 3]]


@st.composite
def raw_policies(draw: st.DrawFn) -> dict[str, Any]:
    action = draw(st.sampled_from(["ALLOW", "DENY", "AUDIT", "CUSTOM"]))
    spec: dict[str, Any] = {"action": action, "rules": draw(st.lists(_rule, min_size=1, max_size=3))}
    if action == "CUSTOM":
        spec["provider"] = {"name": "ext"}
    if draw(st.booleans()):
        spec["selector"] = {"matchLabels": {"app": draw(st.sampled_from(["cart", "db"]))}}
    metadata: dict[str, Any] = {"name": f"p{draw(st.integers(0, 99))}",
                                "namespace": draw(st.sampled_from(NAMESPACES))}
    if draw(st.integers(0, 4)) == 0:
        metadata["annotations"] = {"istio.io/dry-run": "true"}
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": metadata, "spec": spec}


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in the document (containers included: they can be replaced too)."""
    found = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _leaves(value, (*path, index))
    return found


@st.composite
def broken_policies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid document with one value replaced, or one key added where none is expected."""
    document = copy.deepcopy(draw(raw_policies()))
    paths = _leaves(document)
    path = paths[draw(st.integers(0, len(paths) - 1))]
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    if draw(st.integers(0, 4)) == 0 and isinstance(parent, dict):
        parent[draw(st.sampled_from(["unknownField", "notPorts", "x"]))] = draw(st.sampled_from(ODD_VALUES))
    else:
        parent[path[-1]] = draw(st.sampled_from(ODD_VALUES))
    return document


@dataclass(frozen=True, slots=True)
class Pair:
    policies: tuple[dict[str, Any], ...]
    request: dict[str, Any]


pairs = st.builds(Pair, st.lists(raw_policies(), min_size=1, max_size=3).map(tuple), requests())


def check_pair(pair: Pair, tally: Tally) -> bool:
    """Judge one pair; False when it could not be judged (a generated policy is invalid)."""
    try:
        policies = [parse_policy(raw) for raw in pair.policies]
    except PolicyInvalid:  # e.g. CUSTOM with principals: Istio refuses it, so does meshca
        tally.record("pair: a generated policy is invalid (skipped)")
        return False
    try:
        request, _ = parse_request(pair.request)
        matched = False
        for policy in policies:
            for mesh in MESHES:
                compiled = compile_policy(policy, mesh)
                fast, slow = compiled.first_match(request), compiled.first_match_slowly(request)
                if fast != slow:
                    tally.record("pair: DISAGREE", f"compiled {fast} != field-by-field {slow}", pair)
                    return True
                matched |= fast is not None
        unique = list({p.key: p for p in policies}.values())
        remembered = PolicySet.build(unique, MESH, plan_cache_size=4)
        fresh = PolicySet.build(unique, MESH, plan_cache_size=0)
        for _ in range(2):  # the second time from the remembered plan
            if evaluate(remembered, request).to_json() != evaluate(fresh, request).to_json():
                tally.record("pair: DISAGREE", "remembered plan decides otherwise", pair)
                return True
    except Exception as exc:  # noqa: BLE001 - any exception is the finding
        tally.record("pair: EXCEPTION", f"{type(exc).__name__}: {exc}", pair)
        return True
    tally.record("pair: agree, a rule matched" if matched else "pair: agree, no rule matched")
    return True


def check_broken(document: dict[str, Any], tally: Tally) -> None:
    try:
        parse_policy(document)
    except PolicyInvalid as exc:
        if all(error.field for error in exc.errors):
            tally.record("invalid: refused with a field path")
        else:
            tally.record("invalid: refused without a field path", "no field path", (exc, document))
        return
    except Exception as exc:  # noqa: BLE001
        tally.record("invalid: EXCEPTION", f"{type(exc).__name__}: {exc}", document)
        return
    tally.record("invalid: still a valid policy")  # e.g. a selector label replaced by "*"


def fuzz_authz(examples: int, *, seed_value: int = 17, seconds: float | None = None,
               tally: Tally | None = None) -> Tally:
    """`examples` policy/request pairs judged (pairs with a policy Istio would refuse are
    counted as skipped, on top), then a tenth as many broken policies."""
    tally = tally or Tally("authorization engine (compiled vs field-by-field)")
    run_strategy(pairs, examples, lambda pair: check_pair(pair, tally), seed_value=seed_value,
                 seconds=seconds)
    run_strategy(broken_policies(), max(10, examples // 10), lambda doc: check_broken(doc, tally),
                 seed_value=seed_value, seconds=None if seconds is None else seconds / 10)
    return tally.done()
