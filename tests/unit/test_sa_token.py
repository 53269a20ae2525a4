"""Claims of a Kubernetes projected service-account token (docs/contracts.md §2)."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from meshca.core.sa_token import (
    LEGACY_ISSUER,
    ServiceAccount,
    TokenRules,
    check_claims,
    parse_subject,
)
from meshca.errors import AuthenticationError

ISSUER = "https://kubernetes.default.svc.cluster.local"
RULES = TokenRules(issuer=ISSUER, audiences=frozenset({"istio-ca"}))
NOW = 1_780_000_000


def claims(**changes: Any) -> dict[str, Any]:
    """A bound projected token as the API server writes it; `changes` replace (None removes)."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "system:serviceaccount:shop:web",
        "aud": ["istio-ca"],
        "exp": NOW + 3600,
        "iat": NOW - 60,
        "nbf": NOW - 60,
        "jti": "3f1e2d4c-0000-4000-8000-000000000001",
        "kubernetes.io": {
            "namespace": "shop",
            "serviceaccount": {"name": "web", "uid": "sa-uid-1"},
            "pod": {"name": "web-7d4b9c-xk2lp", "uid": "pod-uid-1"},
            "node": {"name": "node-a", "uid": "node-uid-1"},
        },
    }
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def _k8s(**changes: Any) -> dict[str, Any]:
    k8s: dict[str, Any] = copy.deepcopy(claims()["kubernetes.io"])
    for key, value in changes.items():
        if value is None:
            k8s.pop(key, None)
        else:
            k8s[key] = value
    return k8s


def _refused(c: dict[str, Any], message: str, rules: TokenRules = RULES, now: float = NOW) -> None:
    with pytest.raises(AuthenticationError, match=re.escape(message)):
        check_claims(c, rules, now)


# ---- accepted -------------------------------------------------------------------------------

def test_bound_token_gives_namespace_account_pod_and_node() -> None:
    assert check_claims(claims(), RULES, NOW) == ServiceAccount(
        namespace="shop", name="web", pod_name="web-7d4b9c-xk2lp", pod_uid="pod-uid-1",
        node_name="node-a", expires_at=NOW + 3600,
    )


def test_unbound_token_has_no_pod_or_node() -> None:
    account = check_claims(claims(kubernetes__io=_k8s(pod=None, node=None)), RULES, NOW)
    assert (account.namespace, account.name) == ("shop", "web")
    assert account.pod_name is None and account.pod_uid is None and account.node_name is None


@pytest.mark.parametrize(
    ("pod", "node"),
    [("web-1", "node-a"), ({"name": ""}, {"name": ""}), ({"name": 5, "uid": ["x"]}, {"name": None}),
     ({}, {}), (None, None)],
)
def test_pod_and_node_that_are_not_named_objects_become_none(pod: Any, node: Any) -> None:
    k8s = _k8s()
    k8s["pod"], k8s["node"] = pod, node
    account = check_claims(claims(kubernetes__io=k8s), RULES, NOW)
    assert account.pod_name is None
    assert account.pod_uid is None
    assert account.node_name is None


def test_pod_without_node() -> None:
    account = check_claims(claims(kubernetes__io=_k8s(node=None)), RULES, NOW)
    assert account.pod_name == "web-7d4b9c-xk2lp"
    assert account.node_name is None


def test_minimal_token_without_iat_nbf_or_jti() -> None:
    account = check_claims(claims(iat=None, nbf=None, jti=None), RULES, NOW)
    assert account.expires_at == NOW + 3600


def test_fractional_exp_is_truncated_for_the_record() -> None:
    assert check_claims(claims(exp=NOW + 10.75), RULES, NOW).expires_at == NOW + 10


# ---- issuer ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "iss", ["https://other.example", ISSUER + "/", ISSUER.upper(), "", 42, ["https://x"]],
)
def test_other_issuer_is_refused(iss: Any) -> None:
    _refused(claims(iss=iss), "token issuer is not the configured issuer")


def test_missing_issuer_is_refused() -> None:
    _refused(claims(iss=None), "token issuer is not the configured issuer")


def test_legacy_secret_token_is_refused() -> None:
    legacy = {
        "iss": LEGACY_ISSUER,
        "kubernetes.io/serviceaccount/namespace": "shop",
        "kubernetes.io/serviceaccount/service-account.name": "web",
        "sub": "system:serviceaccount:shop:web",
    }
    _refused(legacy, "legacy secret-based service-account tokens are not accepted")


def test_legacy_issuer_is_refused_even_if_configured() -> None:
    rules = TokenRules(issuer=LEGACY_ISSUER, audiences=frozenset({"istio-ca"}))
    _refused(claims(iss=LEGACY_ISSUER), "legacy secret-based", rules=rules)


# ---- audience -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "aud",
    ["istio-ca", ["istio-ca"], ["https://kubernetes.default.svc", "istio-ca"], [7, "istio-ca"]],
)
def test_accepted_audience_as_string_or_list(aud: Any) -> None:
    assert check_claims(claims(aud=aud), RULES, NOW).name == "web"


@pytest.mark.parametrize(
    "aud",
    ["istio", "Istio-CA", "", [], ["api"], [["istio-ca"]], {"istio-ca": True}, 1, "istio-ca,api",
     [None]],
)
def test_other_audience_is_refused(aud: Any) -> None:
    _refused(claims(aud=aud), "token audience does not include an accepted audience")


def test_missing_audience_is_refused() -> None:
    _refused(claims(aud=None), "token audience does not include an accepted audience")


def test_any_of_several_accepted_audiences_will_do() -> None:
    rules = TokenRules(issuer=ISSUER, audiences=frozenset({"istio-ca", "meshca"}))
    assert check_claims(claims(aud="meshca"), rules, NOW).name == "web"
    assert check_claims(claims(aud=["x", "meshca"]), rules, NOW).name == "web"


# ---- times ----------------------------------------------------------------------------------

def test_missing_exp_is_refused() -> None:
    _refused(claims(exp=None), "token never expires (no exp claim)")


@pytest.mark.parametrize("offset", [0, -1, -59, -60])
def test_expired_within_the_skew_is_accepted(offset: int) -> None:
    assert check_claims(claims(exp=NOW + offset, iat=NOW - 600, nbf=NOW - 600), RULES, NOW)


@pytest.mark.parametrize("offset", [-61, -3600, -NOW])
def test_expired_beyond_the_skew_is_refused(offset: int) -> None:
    _refused(claims(exp=NOW + offset, iat=NOW - 7200, nbf=NOW - 7200), "token has expired")


def test_skew_is_configurable() -> None:
    strict = TokenRules(issuer=ISSUER, audiences=frozenset({"istio-ca"}), skew_seconds=0)
    assert check_claims(claims(exp=NOW), strict, NOW)
    _refused(claims(exp=NOW - 1), "token has expired", rules=strict)
    _refused(claims(exp=NOW - 0.5), "token has expired", rules=strict)
    _refused(claims(nbf=NOW + 1), "(nbf)", rules=strict)


@pytest.mark.parametrize(("claim", "message"), [("nbf", "token is not valid yet (nbf)"),
                                                ("iat", "token was issued in the future (iat)")])
def test_not_yet_valid_beyond_the_skew_is_refused(claim: str, message: str) -> None:
    assert check_claims(claims(**{claim: NOW + 60}), RULES, NOW)
    _refused(claims(**{claim: NOW + 61}), message)
    _refused(claims(**{claim: NOW + 86400}), message)


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize(
    "value", [True, False, str(NOW + 3600), [NOW], {"t": NOW}, ""], ids=repr,
)
def test_non_numeric_times_are_refused(claim: str, value: Any) -> None:
    _refused(claims(**{claim: value}), f"token {claim} claim is not a number")


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 10**400],
                         ids=["nan", "inf", "-inf", "10**400"])
def test_non_finite_times_are_refused(claim: str, value: Any) -> None:
    # JSON parsers yield these from NaN, Infinity, 1e400 or huge integers.
    _refused(claims(**{claim: value}), f"token {claim} claim is not a finite number of seconds")


def test_times_are_checked_after_issuer_and_audience() -> None:
    _refused(claims(exp=None, aud="api"), "audience")
    _refused(claims(exp=None, iss="https://other"), "issuer")


# ---- subject --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "sub",
    [
        "system:serviceaccount:shop",
        "system:serviceaccount:shop:web:extra",
        "system:serviceaccount::web",
        "system:serviceaccount:shop:",
        "system:serviceaccount:",
        "system:serviceaccounts:shop:web",
        "System:ServiceAccount:shop:web",
        "user:shop:web",
        "shop:web",
        " system:serviceaccount:shop:web",
        "",
        42,
        ["system:serviceaccount:shop:web"],
    ],
    ids=repr,
)
def test_subject_that_is_not_a_service_account_is_refused(sub: Any) -> None:
    _refused(claims(sub=sub), "token subject is not a Kubernetes service account")


def test_missing_subject_is_refused() -> None:
    _refused(claims(sub=None), "token subject is not a Kubernetes service account")


@pytest.mark.parametrize(
    ("sub", "expected"),
    [("system:serviceaccount:shop:web", ("shop", "web")),
     ("system:serviceaccount:istio-system:istiod", ("istio-system", "istiod")),
     ("system:serviceaccount:a-b:c.d-e", ("a-b", "c.d-e")),
     (f"system:serviceaccount:{'n' * 63}:{'s' * 253}", ("n" * 63, "s" * 253))],
)
def test_parse_subject(sub: str, expected: tuple[str, str]) -> None:
    assert parse_subject(sub) == expected


@pytest.mark.parametrize(
    ("namespace", "name", "message"),
    [("n" * 64, "web", "namespace is longer than 63"),
     ("a.b", "web", "namespace is not a DNS label"),
     ("Shop", "web", "namespace is not a DNS label"),
     ("-shop", "web", "namespace is not a DNS label"),
     ("shop", "s" * 254, "service-account name is longer than 253"),
     ("shop", "s" * 3000, "service-account name is longer than 253"),
     ("shop", "web..x", "not a DNS subdomain"),
     ("shop", "web_x", "not a DNS subdomain"),
     ("shop", "Web", "not a DNS subdomain")],
)
def test_subject_that_no_kubernetes_object_could_have_is_refused(
        namespace: str, name: str, message: str) -> None:
    with pytest.raises(AuthenticationError, match=message) as refused:
        parse_subject(f"system:serviceaccount:{namespace}:{name}")
    assert refused.value.reason == "subject"
    assert "s" * 100 not in str(refused.value)  # the name is not echoed


# ---- the kubernetes.io claim ----------------------------------------------------------------

@pytest.mark.parametrize("k8s", [None, "shop", ["shop"], 1], ids=repr)
def test_missing_kubernetes_claim_is_refused(k8s: Any) -> None:
    c = claims()
    if k8s is None:
        del c["kubernetes.io"]
    else:
        c["kubernetes.io"] = k8s
    _refused(c, "token lacks the kubernetes.io claim of a projected token")


@pytest.mark.parametrize(
    "k8s",
    [
        _k8s(namespace="other"),
        _k8s(namespace=None),
        _k8s(serviceaccount={"name": "db", "uid": "sa-uid-1"}),
        _k8s(serviceaccount={"uid": "sa-uid-1"}),
        _k8s(serviceaccount="web"),
        _k8s(serviceaccount=None),
        {},
    ],
    ids=["namespace-differs", "no-namespace", "name-differs", "no-name", "sa-not-object", "no-sa",
         "empty"],
)
def test_kubernetes_claim_that_disagrees_with_the_subject_is_refused(k8s: dict[str, Any]) -> None:
    _refused(claims(kubernetes__io=k8s), "token subject and kubernetes.io claim disagree")
