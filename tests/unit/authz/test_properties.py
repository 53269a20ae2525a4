"""Properties over generated policies and requests (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from meshca.authz import PolicySet, evaluate, parse_policy, parse_request
from meshca.authz.model import Action, AuthorizationPolicy

NAMESPACES = ["istio-system", "shop", "web"]
PRINCIPALS = ["cluster.local/ns/web/sa/a", "cluster.local/ns/shop/sa/b", "cluster.local/ns/web/*", "*"]
PATHS = ["/a", "/a/*", "*.png", "*"]
METHODS = ["GET", "POST", "P*"]
PORTS = ["80", "8080"]


def _sources() -> st.SearchStrategy[dict[str, Any]]:
    field = st.sampled_from(["principals", "notPrincipals", "namespaces", "notNamespaces", "ipBlocks",
                             "requestPrincipals"])
    values = {"principals": PRINCIPALS, "notPrincipals": PRINCIPALS, "namespaces": NAMESPACES,
              "notNamespaces": NAMESPACES, "ipBlocks": ["10.0.0.0/8", "192.168.1.1"],
              "requestPrincipals": ["iss/*", "*"]}
    return field.flatmap(lambda f: st.lists(st.sampled_from(values[f]), min_size=1, max_size=2)
                         .map(lambda v: {f: v}))


def _operations() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.lists(st.sampled_from(PATHS), min_size=1, max_size=2).map(lambda v: {"paths": v}),
        st.lists(st.sampled_from(METHODS), min_size=1, max_size=2).map(lambda v: {"notMethods": v}),
        st.lists(st.sampled_from(METHODS), min_size=1, max_size=2).map(lambda v: {"methods": v}),
        st.lists(st.sampled_from(PORTS), min_size=1, max_size=2).map(lambda v: {"ports": v}))


_rule = st.fixed_dictionaries({}, optional={
    "from": st.lists(_sources().map(lambda s: {"source": s}), min_size=1, max_size=2),
    "to": st.lists(_operations().map(lambda o: {"operation": o}), min_size=1, max_size=2),
})


@st.composite
def policies(draw: st.DrawFn, action: str | None = None, index: int = 0) -> AuthorizationPolicy:
    chosen = action or draw(st.sampled_from(["ALLOW", "DENY", "AUDIT"]))
    spec: dict[str, Any] = {"action": chosen, "rules": draw(st.lists(_rule, min_size=1, max_size=3))}
    if chosen == "ALLOW" and draw(st.booleans()) and draw(st.booleans()):
        del spec["rules"]  # `spec: {}`-like: matches nothing
    if draw(st.booleans()):
        spec["selector"] = {"matchLabels": {"app": draw(st.sampled_from(["cart", "db"]))}}
    name = f"p{index}-{draw(st.integers(0, 10_000))}"
    return parse_policy({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                         "metadata": {"name": name, "namespace": draw(st.sampled_from(NAMESPACES))},
                         "spec": spec})


@st.composite
def policy_lists(draw: st.DrawFn) -> list[AuthorizationPolicy]:
    count = draw(st.integers(0, 6))
    return [draw(policies(index=i)) for i in range(count)]


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    protocol = draw(st.sampled_from(["HTTP", "TCP"]))
    request: dict[str, Any] = {
        "protocol": protocol,
        "source": {"principal": draw(st.sampled_from([None, "spiffe://cluster.local/ns/web/sa/a",
                                                      "spiffe://cluster.local/ns/shop/sa/b"])),
                   "ip": draw(st.sampled_from(["10.1.1.1", "192.168.1.1", "172.16.0.1"]))},
        "destination": {"namespace": draw(st.sampled_from(NAMESPACES[1:])),
                        "labels": {"app": draw(st.sampled_from(["cart", "db"]))},
                        "port": int(draw(st.sampled_from(PORTS)))},
    }
    if protocol == "HTTP":
        request["http"] = {"method": draw(st.sampled_from(["GET", "POST", "PUT"])),
                           "path": draw(st.sampled_from(["/a", "/a/b", "/x.png", "/"])),
                           "host": "h", "headers": {}}
        if draw(st.booleans()):
            request["auth"] = {"principal": "iss/user"}
    return request


@settings(max_examples=300, deadline=None)
@given(policy_lists(), policies(action="DENY", index=99), requests())
def test_adding_a_deny_never_turns_deny_into_allow(existing: list[AuthorizationPolicy],
                                                   deny: AuthorizationPolicy,
                                                   raw: dict[str, Any]) -> None:
    request, _ = parse_request(raw)
    before = evaluate(PolicySet.build(existing), request)
    after = evaluate(PolicySet.build([*existing, deny]), request)
    if not before.allowed:
        assert not after.allowed
    assert deny.action is Action.DENY


@settings(max_examples=300, deadline=None)
@given(policy_lists(), requests())
def test_a_deny_without_applying_allow_policies_was_a_matching_deny(
        existing: list[AuthorizationPolicy], raw: dict[str, Any]) -> None:
    request, _ = parse_request(raw)
    policy_set = PolicySet.build(existing)
    decision = evaluate(policy_set, request)
    applying = policy_set.applicable(request.destination_namespace, request.destination_labels)
    allow_applies = any(p.action is Action.ALLOW and not p.policy.dry_run for p in applying)
    if not decision.allowed and not allow_applies:
        assert decision.action in ("DENY", "CUSTOM") and decision.policy is not None
        decider = next(p for p in applying if p.key == decision.policy)
        assert decision.rule is not None and decider.first_match(request) == decision.rule


@settings(max_examples=200, deadline=None)
@given(policy_lists(), requests())
def test_the_index_agrees_with_a_linear_scan(existing: list[AuthorizationPolicy],
                                             raw: dict[str, Any]) -> None:
    request, _ = parse_request(raw)
    policy_set = PolicySet.build(existing)
    labels = request.destination_labels
    scanned = sorted(
        p.key for p in existing
         if p.namespace in ("istio-system", request.destination_namespace)
         and all(labels.get(k) == v for k, v in (p.selector or {}).items()))
    indexed = sorted(p.key for p in policy_set.applicable(request.destination_namespace, labels))
    assert indexed == scanned
