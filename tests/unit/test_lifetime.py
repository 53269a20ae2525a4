"""Leaf lifetimes: Istio semantics (<= 0 is the default, above the maximum is refused)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from meshca.core.lifetime import LifetimePolicy, Validity, leaf_validity
from meshca.errors import CaUnavailable, InvalidRequest
from tests.unit.pki import NOW

DAY = timedelta(days=1)
POLICY = LifetimePolicy(default_ttl=DAY, max_ttl=90 * DAY, backdate=timedelta(minutes=5))
FAR = NOW + 365 * DAY  # an issuer that outlives everything asked for


@pytest.mark.parametrize("requested", [0, -1, -86400, -(2**63)])
def test_zero_or_negative_means_the_default(requested: int) -> None:
    validity = leaf_validity(requested, POLICY, NOW, FAR)
    assert validity == Validity(not_before=NOW - timedelta(minutes=5), not_after=NOW + DAY)


@pytest.mark.parametrize("requested", [1, 60, 3600, 86400 * 7, 90 * 86400])
def test_requested_lifetime_is_granted_exactly(requested: int) -> None:
    validity = leaf_validity(requested, POLICY, NOW, FAR)
    assert validity.not_after == NOW + timedelta(seconds=requested)
    assert validity.not_before == NOW - timedelta(minutes=5)


@pytest.mark.parametrize("requested", [90 * 86400 + 1, 365 * 86400, 2**62])
def test_above_the_maximum_is_refused_not_clamped(requested: int) -> None:
    message = f"requested lifetime {requested}s exceeds the maximum {90 * 86400}s"
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        leaf_validity(requested, POLICY, NOW, FAR)


@pytest.mark.parametrize("requested", [0, 7200, 90 * 86400])
def test_leaf_is_cut_at_the_issuers_not_after(requested: int) -> None:
    issuer_end = NOW + timedelta(minutes=30)
    validity = leaf_validity(requested, POLICY, NOW, issuer_end)
    assert validity.not_after == issuer_end
    assert validity.not_before == NOW - timedelta(minutes=5)


def test_leaf_ending_exactly_with_its_issuer_is_not_cut() -> None:
    validity = leaf_validity(3600, POLICY, NOW, NOW + timedelta(hours=1))
    assert validity.not_after == NOW + timedelta(hours=1)


def test_issuer_expiring_a_moment_from_now_still_signs_until_then() -> None:
    issuer_end = NOW + timedelta(microseconds=1)
    assert leaf_validity(0, POLICY, NOW, issuer_end).not_after == issuer_end


@pytest.mark.parametrize("issuer_end", [NOW, NOW - timedelta(seconds=1), NOW - 30 * DAY])
def test_expired_issuer_is_refused(issuer_end: object) -> None:
    with pytest.raises(CaUnavailable, match="the issuing CA has expired"):
        leaf_validity(0, POLICY, NOW, issuer_end)  # type: ignore[arg-type]


def test_an_expired_issuer_is_reported_even_for_an_explicit_request() -> None:
    with pytest.raises(CaUnavailable, match="expired"):
        leaf_validity(60, POLICY, NOW, NOW - DAY)


def test_maximum_is_checked_before_the_issuer() -> None:
    with pytest.raises(InvalidRequest, match="exceeds the maximum"):
        leaf_validity(91 * 86400, POLICY, NOW, NOW - DAY)


@pytest.mark.parametrize("backdate", [timedelta(0), timedelta(seconds=1), timedelta(hours=1)])
def test_backdate_moves_only_not_before(backdate: timedelta) -> None:
    policy = LifetimePolicy(default_ttl=DAY, max_ttl=DAY, backdate=backdate)
    validity = leaf_validity(0, policy, NOW, FAR)
    assert validity.not_before == NOW - backdate
    assert validity.not_after == NOW + DAY


def test_default_equal_to_maximum_is_a_valid_policy() -> None:
    policy = LifetimePolicy(default_ttl=DAY, max_ttl=DAY, backdate=timedelta(0))
    assert leaf_validity(86400, policy, NOW, FAR).not_after == NOW + DAY
    with pytest.raises(InvalidRequest):
        leaf_validity(86401, policy, NOW, FAR)


@pytest.mark.parametrize(
    ("default", "maximum", "backdate", "message"),
    [
        (timedelta(0), DAY, timedelta(0), "must be positive"),
        (-DAY, DAY, timedelta(0), "must be positive"),
        (DAY, timedelta(0), timedelta(0), "must be positive"),
        (DAY, -DAY, timedelta(0), "must be positive"),
        (2 * DAY, DAY, timedelta(0), "must not exceed the maximum"),
        (DAY, DAY, -timedelta(seconds=1), "backdate must not be negative"),
    ],
)
def test_invalid_policy_values_are_refused(
    default: timedelta, maximum: timedelta, backdate: timedelta, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        LifetimePolicy(default_ttl=default, max_ttl=maximum, backdate=backdate)
