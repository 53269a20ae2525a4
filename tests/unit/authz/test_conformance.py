"""The conformance cases (tests/authz_cases), decided in process, explained, and refused."""

from __future__ import annotations

import pytest

from meshca.authz import (
    PolicyInvalid,
    PolicySet,
    evaluate,
    parse_mesh,
    parse_policies,
    parse_policy,
    parse_request,
)
from meshca.authz.model import MeshConfig
from tests.unit.authz.cases import Case, answered, expected, load_cases, load_invalid

CASES = load_cases()


def decide(case: Case, explain: bool = False) -> dict[str, object]:
    request, mesh = parse_request(case.request)
    policies = PolicySet.build(parse_policies(case.policies), mesh or MeshConfig())
    return evaluate(policies, request, with_explain=explain).to_json()


def test_there_are_at_least_40_cases() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decision(case: Case) -> None:
    answer = decide(case)
    assert answered(answer) == expected(case)
    if "action" in case.expect:
        assert answer["action"] == case.expect["action"]
    if "dry_run" in case.expect:
        assert answer["dry_run"] == case.expect["dry_run"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_explaining_changes_nothing_and_names_the_decider(case: Case) -> None:
    plain, explained = decide(case), decide(case, explain=True)
    assert answered(explained) == answered(plain)
    entries = explained["explain"]
    assert isinstance(entries, list)
    if plain["policy"] is not None:
        decider = next(e for e in entries if e["policy"] == plain["policy"])
        assert decider["applies"] and decider["matched"] and decider["rule"] == plain["rule"]
    for entry in entries:  # a policy that applies and did not match says where, per rule
        if entry["applies"] and not entry["matched"]:
            assert all(isinstance(m, str) for m in entry["not_matched"])


INVALID = load_invalid()


@pytest.mark.parametrize("case", INVALID, ids=[c["name"] for c in INVALID])
def test_invalid_policy_is_refused_with_field_and_reason(case: dict[str, object]) -> None:
    with pytest.raises(PolicyInvalid) as caught:
        parse_policy(case["policy"])
    matching = [e for e in caught.value.errors if e.field == case["field"]]
    assert matching, caught.value.errors
    assert any(str(case["reason"]) in e.message for e in matching), matching


def test_every_case_policy_is_valid_as_is() -> None:
    for case in CASES:
        parse_policies(case.policies)


def test_explain_names_the_first_field_that_did_not_match() -> None:
    case = next(c for c in CASES if "exact means exact" in c.id)
    entry = decide(case, explain=True)["explain"][0]  # type: ignore[index]
    assert entry["policy"] == "shop/strings"
    assert entry["not_matched"][0] == "rules[0].to[0].operation.paths"
    assert entry["not_matched"][4] == "rules[4].when[0]"


def test_explain_lists_a_policy_whose_selector_does_not_match() -> None:
    case = next(c for c in CASES if "selector needs every one" in c.id)
    request = dict(case.request, destination={**case.request["destination"],
                                              "labels": {"app": "cart", "version": "v1"}})
    answer = decide(Case(case.id, case.policies, request, case.expect), explain=True)
    explained = answer["explain"]
    assert isinstance(explained, list)
    entry = next(e for e in explained if e["policy"] == "shop/allow-cart-v2")
    assert entry["applies"] is False
    assert "version=v2" in entry["note"]


def test_mesh_override_is_validated() -> None:
    with pytest.raises(ValueError, match="extensionProviders"):
        parse_mesh({"extensionProviders": {"opa": "MAYBE"}})
