"""The deciding fast path (generated rule functions, per-workload plans, prebuilt decisions)
answers exactly as the field-by-field path explanations use."""

from __future__ import annotations

from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from meshca.authz import PolicyInvalid, PolicySet, evaluate, parse_policy, parse_request
from meshca.authz.compile import compile_policy
from meshca.authz.model import AuthorizationPolicy, MeshConfig
from meshca.authz.rulegen import _code_cache
from tests.unit.authz.cases import load_cases
from tests.unit.authz.test_properties import NAMESPACES

NASTY = "x') or True or ('"  # a value that would change the code if it were ever spliced in
STRINGS = ["a", "*", "a*", "*a", "cluster.local/ns/web/sa/a", "cluster.local/ns/web/*", NASTY]
VALUES: dict[str, list[str]] = {
    "principals": STRINGS, "namespaces": ["web", "shop", "w*", "*", NASTY],
    "serviceAccounts": ["a", "web/a", "shop/b"], "requestPrincipals": ["iss/*", "*", "iss/user"],
    "ipBlocks": ["10.0.0.0/8", "192.168.1.1"], "remoteIpBlocks": ["10.0.0.0/8", "172.16.0.1"],
    "hosts": ["H", "*.example.com", "h*", NASTY], "ports": ["80", "8080"],
    "methods": ["GET", "P*", "*"], "paths": ["/a", "/a/*", "*.png", "/a/{*}", "/{**}", NASTY],
}
KEYS: dict[str, list[str]] = {
    "request.headers[x-t]": ["t1", "t*", "*", NASTY], "source.namespace": ["web", "sh*"],
    "source.principal": ["cluster.local/ns/web/sa/a", "*"], "destination.port": ["80", "8080"],
    "source.ip": ["10.0.0.0/8"], "request.auth.claims[groups]": ["admin", "dev*"],
    "request.auth.audiences": ["aud1"], "source.serviceAccount": ["web/a"],
    "connection.sni": ["s*"],
}
SOURCE = ["principals", "namespaces", "serviceAccounts", "requestPrincipals", "ipBlocks",
          "remoteIpBlocks"]
OPERATION = ["hosts", "ports", "methods", "paths"]


def _match(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    def field(name: str) -> st.SearchStrategy[tuple[str, list[str]]]:
        shown = st.sampled_from([name, "not" + name[0].upper() + name[1:]])
        return st.tuples(shown, st.lists(st.sampled_from(VALUES[name]), min_size=1, max_size=3))
    return st.lists(st.sampled_from(names).flatmap(field), min_size=1, max_size=3).map(dict)


def _condition() -> st.SearchStrategy[dict[str, Any]]:
    def values(key: str) -> st.SearchStrategy[dict[str, Any]]:
        some = st.lists(st.sampled_from(KEYS[key]), min_size=1, max_size=2)
        return st.one_of(some.map(lambda v: {"key": key, "values": v}),
                         some.map(lambda v: {"key": key, "notValues": v}),
                         st.tuples(some, some).map(lambda p: {"key": key, "values": p[0],
                                                               "notValues": p[1]}))
    return st.sampled_from(sorted(KEYS)).flatmap(values)


_rule = st.fixed_dictionaries({}, optional={
    "from": st.lists(_match(SOURCE).map(lambda s: {"source": s}), min_size=1, max_size=2),
    "to": st.lists(_match(OPERATION).map(lambda o: {"operation": o}), min_size=1, max_size=2),
    "when": st.lists(_condition(), min_size=1, max_size=2),
})


@st.composite
def policies(draw: st.DrawFn) -> AuthorizationPolicy:
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
    try:
        return parse_policy({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                             "metadata": metadata, "spec": spec})
    except PolicyInvalid:  # e.g. CUSTOM with principals: Istio refuses it, so does meshca
        assume(False)
        raise


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    protocol = draw(st.sampled_from(["HTTP", "TCP"]))
    request: dict[str, Any] = {
        "protocol": protocol,
        "source": {"principal": draw(st.sampled_from(
            [None, "spiffe://cluster.local/ns/web/sa/a", "spiffe://cluster.local/ns/shop/sa/b",
             "spiffe://" + NASTY])),
                   "ip": draw(st.sampled_from(["10.1.1.1", "192.168.1.1", "172.16.0.1"]))},
        "destination": {"namespace": draw(st.sampled_from(NAMESPACES[1:])),
                        "labels": {"app": draw(st.sampled_from(["cart", "db"]))},
                        "port": int(draw(st.sampled_from(["80", "8080"])))},
    }
    if draw(st.booleans()):
        request["source"]["remote_ip"] = "172.16.0.1"
    if draw(st.booleans()):
        request["sni"] = draw(st.sampled_from(["sni", ""]))
    if protocol == "HTTP":
        headers = draw(st.sampled_from([{}, {"x-t": "t1"}, {"x-t": ""}, {"X-T": "t2"}, {"x-t": NASTY}]))
        request["http"] = {"method": draw(st.sampled_from(["GET", "POST", "PUT", ""])),
                           "path": draw(st.sampled_from(["/a", "/a/b", "/x.png", "/", NASTY])),
                           "host": draw(st.sampled_from(["h", "H.example.com", "", "x"])),
                           "headers": headers}
        if draw(st.booleans()):
            request["auth"] = {"principal": "iss/user", "audiences": ["aud1"],
                               "claims": {"groups": draw(st.sampled_from([["admin"], "dev1", 3]))}}
    return request


MESH = MeshConfig(trust_domain="td", trust_domain_aliases=("cluster.local",),
                  extension_providers={"ext": "ALLOW"})


@settings(max_examples=400, deadline=None)
@given(policies(), requests())
def test_generated_rules_match_the_field_tests(policy: AuthorizationPolicy,
                                               raw: dict[str, Any]) -> None:
    request, _ = parse_request(raw)
    for mesh in (MeshConfig(), MESH):
        compiled = compile_policy(policy, mesh)
        assert compiled.first_match(request) == compiled.first_match_slowly(request)


def _reference(policy_set: PolicySet, request: Any) -> dict[str, Any]:
    """The decision with no remembered plan."""
    fresh = PolicySet.build(policy_set.policies, policy_set.mesh, plan_cache_size=0)
    return evaluate(fresh, request, with_explain=True).to_json()


@settings(max_examples=200, deadline=None)
@given(st.lists(policies(), max_size=6), st.lists(requests(), min_size=1, max_size=4))
def test_remembered_plans_give_the_same_decisions(existing: list[AuthorizationPolicy],
                                                  raws: list[dict[str, Any]]) -> None:
    unique = list({p.key: p for p in existing}.values())
    policy_set = PolicySet.build(unique, MESH, plan_cache_size=2)  # small: forces clearing
    for raw in raws * 2:
        request, _ = parse_request(raw)
        assert evaluate(policy_set, request, with_explain=True).to_json() == \
            _reference(policy_set, request)
        assert evaluate(policy_set, request).to_json() == \
            {**_reference(policy_set, request), "explain": []}


def test_conformance_cases_agree_rule_by_rule() -> None:
    from meshca.authz import parse_policies

    for case in load_cases():
        request, mesh = parse_request(case.request)
        for policy in parse_policies(case.policies):
            compiled = compile_policy(policy, mesh or MeshConfig())
            assert compiled.first_match(request) == compiled.first_match_slowly(request), case.id


def test_policy_values_never_become_code() -> None:
    policy = parse_policy({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                           "metadata": {"name": "p", "namespace": "web"},
                           "spec": {"rules": [{"to": [{"operation": {"paths": [NASTY]}}],
                                               "when": [{"key": "request.headers[x-t]",
                                                         "values": [NASTY]}]}]}})
    compile_policy(policy, MeshConfig())
    assert not any(NASTY in source or "x-t" in source for source in _code_cache)


def test_check_requests_read_directly_as_through_json() -> None:
    from meshca.transport.ext_authz.attributes import check_request_to_authz, check_request_to_json
    from tests.integration.authz_envoy import check_request

    direct = 0
    for case in load_cases():
        raw = {k: v for k, v in case.request.items() if k != "mesh"}
        check = check_request(raw)
        fast = check_request_to_authz(check)
        if fast is not None:
            direct += 1
            assert fast == parse_request(check_request_to_json(check))[0], case.id
    assert direct >= 20
