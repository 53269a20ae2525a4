"""Rotation decisions: every threshold, every state transition, every situation of next_step."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from meshca.core import rotation
from meshca.core.rotation import (
    Activate,
    Generation,
    Kind,
    Prepare,
    Prune,
    Reason,
    RotationPolicy,
    State,
    Withdraw,
)

NB = datetime(2026, 1, 1, tzinfo=UTC)
WEEK = timedelta(days=7)
YEAR = timedelta(days=365)
DAY = timedelta(days=1)
US = timedelta(microseconds=1)
POLICY = RotationPolicy()  # 1/2, 5/6, skew 1h, refresh hint 5 min, publish lead 1 day
ROOT, INTERMEDIATE = Kind.ROOT, Kind.INTERMEDIATE
PREPARED, ACTIVE, RETIRED, TAINTED = State.PREPARED, State.ACTIVE, State.RETIRED, State.TAINTED


def root(gid: int, state: State, *, start: datetime = NB, ttl: timedelta = YEAR,
         prepared_at: datetime | None = None, last: datetime | None = None) -> Generation:
    return Generation(id=gid, kind=ROOT, state=state, not_before=start, not_after=start + ttl,
                      prepared_at=prepared_at or start, last_leaf_expiry=last)


def inter(gid: int, parent: int, state: State, *, start: datetime = NB, ttl: timedelta = WEEK,
          last: datetime | None = None) -> Generation:
    return Generation(id=gid, kind=INTERMEDIATE, state=state, not_before=start,
                      not_after=start + ttl, prepared_at=start, parent_id=parent,
                      last_leaf_expiry=last)


# ---- thresholds -----------------------------------------------------------------------------

@pytest.mark.parametrize(("ttl", "prepare", "activate"), [
    (WEEK, timedelta(days=3, hours=12), timedelta(days=5, hours=20)),
    (YEAR, timedelta(days=182, hours=12), timedelta(days=304, hours=4)),
    (timedelta(hours=24), timedelta(hours=12), timedelta(hours=20)),
])
def test_default_thresholds_are_half_and_five_sixths(ttl: timedelta, prepare: timedelta,
                                                     activate: timedelta) -> None:
    assert rotation.prepare_time(POLICY, NB, NB + ttl) == NB + prepare
    assert rotation.activate_time(POLICY, NB, NB + ttl) == NB + activate


@pytest.mark.parametrize(("offset", "expected"), [
    (timedelta(0), False), (timedelta(days=3, hours=12) - US, False),
    (timedelta(days=3, hours=12), True), (timedelta(days=3, hours=12) + US, True), (WEEK * 2, True),
])
def test_should_prepare_from_half_life_on(offset: timedelta, expected: bool) -> None:
    assert rotation.should_prepare(POLICY, NB, NB + WEEK, NB + offset) is expected


@pytest.mark.parametrize(("offset", "expected"), [
    (timedelta(days=3, hours=12), False), (timedelta(days=5, hours=20) - US, False),
    (timedelta(days=5, hours=20), True), (timedelta(days=5, hours=20) + US, True), (WEEK, True),
])
def test_should_activate_from_five_sixths_on(offset: timedelta, expected: bool) -> None:
    assert rotation.should_activate(POLICY, NB, NB + WEEK, NB + offset) is expected


def test_thresholds_before_not_before_are_false() -> None:
    assert not rotation.should_prepare(POLICY, NB, NB + WEEK, NB - DAY)
    assert not rotation.should_activate(POLICY, NB, NB + WEEK, NB - DAY)


@pytest.mark.parametrize(("prepare_at", "activate_at", "prepare", "activate"), [
    (0.25, 0.75, timedelta(hours=6), timedelta(hours=18)),
    (1 / 3, 2 / 3, timedelta(hours=8), timedelta(hours=16)),
    (0.5, 0.9, timedelta(hours=12), timedelta(hours=21, minutes=36)),
    (0.001, 0.999, timedelta(seconds=86.4), timedelta(hours=23, minutes=58, seconds=33.6)),
])
def test_custom_fractions(prepare_at: float, activate_at: float, prepare: timedelta,
                          activate: timedelta) -> None:
    policy = RotationPolicy(prepare_at=prepare_at, activate_at=activate_at)
    na = NB + DAY
    assert rotation.prepare_time(policy, NB, na) == NB + prepare
    assert rotation.activate_time(policy, NB, na) == NB + activate
    assert not rotation.should_prepare(policy, NB, na, NB + prepare - US)
    assert rotation.should_prepare(policy, NB, na, NB + prepare)
    assert not rotation.should_activate(policy, NB, na, NB + activate - US)
    assert rotation.should_activate(policy, NB, na, NB + activate)


def test_thresholds_are_the_same_instant_in_any_time_zone() -> None:
    tz = timezone(timedelta(hours=-5))
    na = NB + WEEK
    assert rotation.should_prepare(POLICY, NB.astimezone(tz), na, (NB + WEEK / 2).astimezone(tz))


@pytest.mark.parametrize(("prepare_at", "activate_at"), [
    (0, 0.5), (0.0, 0.8), (-0.1, 0.5), (0.5, 0.5), (0.6, 0.5), (0.5, 1), (0.5, 1.0), (0.5, 1.5),
    (1, 1), (math.nan, 0.8), (0.5, math.nan), (math.inf, 0.8), (0.5, math.inf),
])
def test_fractions_out_of_order_or_range_are_refused(prepare_at: float, activate_at: float) -> None:
    with pytest.raises(ValueError, match="0 < prepare_at < activate_at < 1"):
        RotationPolicy(prepare_at=prepare_at, activate_at=activate_at)


@pytest.mark.parametrize("bad", [True, "0.5", None, DAY])
def test_fractions_must_be_numbers(bad: object) -> None:
    with pytest.raises(TypeError, match="prepare_at must be a number"):
        RotationPolicy(prepare_at=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="activate_at must be a number"):
        RotationPolicy(activate_at=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("changes", "message"), [
    ({"skew": -US}, "skew must not be negative"),
    ({"refresh_hint": timedelta(0)}, "refresh_hint must be positive"),
    ({"refresh_hint": -DAY}, "refresh_hint must be positive"),
    ({"publish_lead": timedelta(minutes=10) - US}, "at least two refresh hints"),
    ({"refresh_hint": DAY, "publish_lead": DAY}, "at least two refresh hints"),
])
def test_bad_timings_are_refused(changes: dict[str, timedelta], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RotationPolicy(**changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["skew", "refresh_hint", "publish_lead"])
def test_timings_must_be_timedeltas(field: str) -> None:
    with pytest.raises(TypeError, match=f"{field} must be a timedelta"):
        RotationPolicy(**{field: 300})  # type: ignore[arg-type]


def test_edge_timings_are_accepted() -> None:
    policy = RotationPolicy(skew=timedelta(0), publish_lead=2 * timedelta(minutes=5))
    assert policy.skew == timedelta(0)
    assert RotationPolicy(prepare_at=1e-9, activate_at=1 - 1e-9).activate_at < 1


def test_policy_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        POLICY.prepare_at = 0.1  # type: ignore[misc]


Threshold = Callable[[RotationPolicy, datetime, datetime, datetime], bool]


@pytest.mark.parametrize("check", [rotation.should_prepare, rotation.should_activate])
def test_threshold_inputs_are_validated(check: Threshold) -> None:
    with pytest.raises(ValueError, match="not_after must follow not_before"):
        check(POLICY, NB, NB, NB)
    with pytest.raises(ValueError, match="not_after must follow not_before"):
        check(POLICY, NB, NB - US, NB)
    with pytest.raises(ValueError, match="timezone-aware"):
        check(POLICY, NB, NB + DAY, datetime(2026, 1, 2))
    with pytest.raises(ValueError, match="timezone-aware"):
        check(POLICY, datetime(2026, 1, 1), NB + DAY, NB)
    with pytest.raises(TypeError, match="datetime"):
        check(POLICY, NB, NB + DAY, "2026-01-02")  # type: ignore[arg-type]


def test_defaults_and_maximum_lifetimes() -> None:
    assert rotation.DEFAULT_ROOT_TTL == YEAR
    assert rotation.DEFAULT_INTERMEDIATE_TTL == WEEK
    assert rotation.max_leaf_ttl(WEEK) == timedelta(hours=28) == WEEK / 6
    assert rotation.max_leaf_ttl(rotation.DEFAULT_INTERMEDIATE_TTL) >= timedelta(hours=24)  # Istio's
    assert rotation.max_intermediate_ttl(YEAR) == YEAR / 6
    assert rotation.max_leaf_ttl(DAY, RotationPolicy(activate_at=0.75)) == timedelta(hours=6)
    with pytest.raises(ValueError, match="positive"):
        rotation.max_leaf_ttl(timedelta(0))


def test_check_lifetimes() -> None:
    rotation.check_lifetimes(POLICY, root_ttl=YEAR, intermediate_ttl=WEEK, leaf_ttl=DAY)
    rotation.check_lifetimes(POLICY, root_ttl=YEAR, intermediate_ttl=YEAR / 6, leaf_ttl=YEAR / 36)
    with pytest.raises(ValueError, match="leaf lifetime exceeds"):
        rotation.check_lifetimes(POLICY, root_ttl=YEAR, intermediate_ttl=WEEK,
                                 leaf_ttl=timedelta(hours=28) + US)
    with pytest.raises(ValueError, match="intermediate lifetime exceeds"):
        rotation.check_lifetimes(POLICY, root_ttl=30 * DAY, intermediate_ttl=WEEK, leaf_ttl=DAY)
    with pytest.raises(ValueError, match="publish_lead"):
        rotation.check_lifetimes(RotationPolicy(publish_lead=4 * DAY), root_ttl=9 * DAY,
                                 intermediate_ttl=DAY, leaf_ttl=timedelta(hours=4))
    with pytest.raises(ValueError, match="positive"):
        rotation.check_lifetimes(POLICY, root_ttl=YEAR, intermediate_ttl=WEEK, leaf_ttl=timedelta(0))


# ---- states -----------------------------------------------------------------------------------

LEGAL = {(PREPARED, ACTIVE), (PREPARED, RETIRED), (PREPARED, TAINTED),
         (ACTIVE, RETIRED), (ACTIVE, TAINTED), (RETIRED, TAINTED)}


@pytest.mark.parametrize(("current", "target"), sorted(LEGAL))
def test_legal_transitions(current: State, target: State) -> None:
    assert current.can_become(target)
    assert rotation.transition(current, target) is target


@pytest.mark.parametrize(("current", "target"),
                         sorted(set(itertools.product(State, State)) - LEGAL))
def test_illegal_transitions(current: State, target: State) -> None:
    assert not current.can_become(target)
    with pytest.raises(ValueError, match=f"a {current} CA generation cannot become {target}"):
        rotation.transition(current, target)


def test_tainted_is_final_and_states_match_the_database() -> None:
    assert not any(TAINTED.can_become(s) for s in State)
    assert [s.value for s in State] == ["prepared", "active", "retired", "tainted"]
    assert [k.value for k in Kind] == ["root", "intermediate", "jwt"]
    with pytest.raises(TypeError):
        rotation.transition("active", RETIRED)  # type: ignore[arg-type]


def test_generation_is_validated() -> None:
    with pytest.raises(ValueError, match="a root has no parent"):
        Generation(1, ROOT, ACTIVE, NB, NB + YEAR, NB, parent_id=2)
    with pytest.raises(ValueError, match="an intermediate has one"):
        Generation(1, INTERMEDIATE, ACTIVE, NB, NB + WEEK, NB)
    with pytest.raises(ValueError, match="not_after must follow not_before"):
        Generation(1, ROOT, ACTIVE, NB, NB, NB)
    with pytest.raises(ValueError, match="timezone-aware"):
        Generation(1, ROOT, ACTIVE, NB, NB + YEAR, NB, last_leaf_expiry=datetime(2026, 2, 1))
    with pytest.raises(TypeError, match="Kind"):
        Generation(1, "root", ACTIVE, NB, NB + YEAR, NB)  # type: ignore[arg-type]


# ---- next_step, situation by situation --------------------------------------------------------

def x509_only(actions: list[rotation.Action]) -> list[rotation.Action]:
    """These cases are about the X.509 chain; JWT keys have their own (test_rotation_jwt.py)."""
    return [a for a in actions if a.kind is not Kind.JWT]


def step(gens: list[Generation], now: datetime, **kwargs: object) -> list[rotation.Action]:
    return x509_only(rotation.next_step(POLICY, gens, now, **kwargs))  # type: ignore[arg-type]


def test_fresh_ca_prepares_a_root() -> None:
    assert step([], NB) == [Prepare(ROOT, None, Reason.BOOTSTRAP)]


def test_bootstrap_root_activates_at_once_with_the_lead_waived() -> None:
    assert step([root(1, PREPARED)], NB) == [Activate(1, ROOT, None, Reason.BOOTSTRAP, lead_waived=True)]


def test_bootstrap_intermediate_is_prepared_under_the_active_root_then_activated() -> None:
    assert step([root(1, ACTIVE)], NB) == [Prepare(INTERMEDIATE, 1, Reason.BOOTSTRAP)]
    assert step([root(1, ACTIVE), inter(2, 1, PREPARED)], NB) == [
        Activate(2, INTERMEDIATE, None, Reason.BOOTSTRAP)]


def test_mid_life_nothing_to_do() -> None:
    gens = [root(1, ACTIVE), inter(2, 1, ACTIVE)]
    assert step(gens, NB) == []
    assert step(gens, NB + timedelta(days=3, hours=12) - US) == []


def test_intermediate_prepared_exactly_at_half_life() -> None:
    gens = [root(1, ACTIVE), inter(2, 1, ACTIVE)]
    assert step(gens, NB + timedelta(days=3, hours=12)) == [Prepare(INTERMEDIATE, 1, Reason.SCHEDULED)]


def test_prepare_done_waits_for_activation() -> None:
    gens = [root(1, ACTIVE), inter(2, 1, ACTIVE), inter(3, 1, PREPARED, start=NB + timedelta(days=3.5))]
    assert step(gens, NB + timedelta(days=3, hours=12)) == []
    assert step(gens, NB + timedelta(days=5, hours=20) - US) == []


def test_intermediate_activated_exactly_at_five_sixths_retiring_the_old_one() -> None:
    gens = [root(1, ACTIVE), inter(2, 1, ACTIVE), inter(3, 1, PREPARED, start=NB + timedelta(days=3.5))]
    assert step(gens, NB + timedelta(days=5, hours=20)) == [
        Activate(3, INTERMEDIATE, 2, Reason.SCHEDULED)]


def test_late_preparation_at_activation_time_then_immediate_activation() -> None:
    gens = [root(1, ACTIVE), inter(2, 1, ACTIVE)]
    now = NB + timedelta(days=6)
    assert step(gens, now) == [Prepare(INTERMEDIATE, 1, Reason.SCHEDULED)]
    assert step([*gens, inter(3, 1, PREPARED, start=now)], now) == [
        Activate(3, INTERMEDIATE, 2, Reason.SCHEDULED)]


def test_expired_intermediate_is_replaced_at_once() -> None:
    gens = [root(1, ACTIVE), inter(2, 1, ACTIVE)]
    now = NB + WEEK
    assert step(gens, now) == [Prepare(INTERMEDIATE, 1, Reason.EXPIRED)]
    assert step([*gens, inter(3, 1, PREPARED, start=now)], now) == [
        Activate(3, INTERMEDIATE, 2, Reason.EXPIRED)]


def test_roots_are_decided_before_intermediates() -> None:
    half_year = NB + YEAR / 2
    gens = [root(1, ACTIVE), inter(2, 1, ACTIVE, start=half_year - WEEK / 2)]
    assert step(gens, half_year) == [Prepare(ROOT, None, Reason.SCHEDULED)]
    gens.append(root(3, PREPARED, start=half_year))
    assert step(gens, half_year) == [Prepare(INTERMEDIATE, 1, Reason.SCHEDULED)]


def test_root_prepared_exactly_at_half_life() -> None:
    gens = [root(1, ACTIVE), inter(2, 1, ACTIVE, start=NB + YEAR / 2 - DAY)]
    assert step(gens, NB + YEAR / 2 - US) == []
    assert step(gens, NB + YEAR / 2) == [Prepare(ROOT, None, Reason.SCHEDULED)]


def test_root_activated_at_five_sixths_once_published_long_enough() -> None:
    at = rotation.activate_time(POLICY, NB, NB + YEAR)
    gens = [root(1, ACTIVE), root(2, PREPARED, start=NB + YEAR / 2), inter(3, 1, ACTIVE, start=at - DAY)]
    assert step(gens, at - US) == []
    assert step(gens, at) == [Activate(2, ROOT, 1, Reason.SCHEDULED)]


def test_root_activation_waits_for_the_publish_lead() -> None:
    at = rotation.activate_time(POLICY, NB, NB + YEAR)
    gens = [root(1, ACTIVE), root(2, PREPARED, start=at - timedelta(hours=2)),
            inter(3, 1, ACTIVE, start=at - DAY)]
    ready = at - timedelta(hours=2) + POLICY.publish_lead
    assert step(gens, at) == []
    assert rotation.next_check(POLICY, gens, at) == ready
    assert step(gens, ready - US) == []
    assert step(gens, ready) == [Activate(2, ROOT, 1, Reason.SCHEDULED)]


def test_root_late_preparation_then_waiting_then_expiry_waives_the_lead() -> None:
    late = NB + YEAR - timedelta(hours=1)
    gens = [root(1, ACTIVE), inter(3, 1, ACTIVE, start=late - DAY)]
    assert step(gens, late) == [Prepare(ROOT, None, Reason.SCHEDULED)]
    gens.append(root(2, PREPARED, start=late))
    assert step(gens, late) == []
    assert rotation.next_check(POLICY, gens, late) == NB + YEAR  # expiry comes before readiness
    assert step(gens, NB + YEAR) == [Activate(2, ROOT, 1, Reason.EXPIRED, lead_waived=True)]


def test_expired_root_without_successor_prepares_one() -> None:
    gens = [root(1, ACTIVE), inter(2, 1, ACTIVE, start=NB + YEAR - WEEK)]
    assert step(gens, NB + YEAR) == [Prepare(ROOT, None, Reason.EXPIRED)]


def test_new_root_gets_a_new_intermediate_at_once() -> None:
    now = rotation.activate_time(POLICY, NB, NB + YEAR)
    r2_start = NB + YEAR / 2
    gens = [root(1, RETIRED), root(2, ACTIVE, start=r2_start),
            inter(3, 1, ACTIVE, start=now - DAY), inter(4, 1, PREPARED, start=now - timedelta(hours=1))]
    assert step(gens, now) == [Withdraw(4, INTERMEDIATE, Reason.PARENT_ROTATED),
                               Prepare(INTERMEDIATE, 2, Reason.PARENT_ROTATED)]
    gens = [*gens[:3], dataclasses.replace(gens[3], state=RETIRED), inter(5, 2, PREPARED, start=now)]
    assert step(gens, now) == [Activate(5, INTERMEDIATE, 3, Reason.PARENT_ROTATED)]
    gens = [*gens[:2], dataclasses.replace(gens[2], state=RETIRED), gens[3],
            dataclasses.replace(gens[4], state=ACTIVE)]
    assert step(gens, now) == []
    assert rotation.signing_generation(gens) == gens[4]


def test_stale_prepared_intermediate_is_withdrawn_and_replaced() -> None:
    gens = [root(1, ACTIVE), inter(2, 1, ACTIVE, start=NB + DAY), inter(3, 1, PREPARED)]
    now = NB + timedelta(days=5, hours=20)  # 3 reached its own 5/6 unused; 2 is mid-life
    assert step(gens, now) == [Withdraw(3, INTERMEDIATE, Reason.STALE),
                               Prepare(INTERMEDIATE, 1, Reason.SCHEDULED)]


def test_stale_prepared_root_is_withdrawn() -> None:
    gens = [root(1, ACTIVE, start=NB + 300 * DAY), root(2, PREPARED),
            inter(3, 1, ACTIVE, start=NB + 300 * DAY)]
    now = NB + 310 * DAY
    assert step(gens, now) == [Withdraw(2, ROOT, Reason.STALE)]


def test_oldest_prepared_generation_is_activated_first() -> None:
    at = rotation.activate_time(POLICY, NB, NB + WEEK)
    gens = [root(1, ACTIVE), inter(2, 1, ACTIVE), inter(4, 1, PREPARED, start=NB + 4 * DAY),
            inter(3, 1, PREPARED, start=NB + 3 * DAY)]
    assert step(gens, at) == [Activate(3, INTERMEDIATE, 2, Reason.SCHEDULED)]


# ---- taints -----------------------------------------------------------------------------------

def test_tainted_intermediate_is_replaced_at_once() -> None:
    now = NB + DAY
    gens = [root(1, ACTIVE), inter(2, 1, TAINTED)]
    assert step(gens, now) == [Prepare(INTERMEDIATE, 1, Reason.TAINTED)]
    gens.append(inter(3, 1, PREPARED, start=now))
    assert step(gens, now) == [Activate(3, INTERMEDIATE, None, Reason.TAINTED)]


def test_tainted_intermediate_with_a_prepared_successor_activates_it() -> None:
    gens = [root(1, ACTIVE), inter(2, 1, TAINTED), inter(3, 1, PREPARED, start=NB + 4 * DAY)]
    assert step(gens, NB + 4 * DAY) == [Activate(3, INTERMEDIATE, None, Reason.TAINTED)]


def test_tainted_prepared_intermediate_is_simply_replaced_later() -> None:
    gens = [root(1, ACTIVE), inter(2, 1, ACTIVE), inter(3, 1, TAINTED, start=NB + 4 * DAY)]
    assert step(gens, NB + 4 * DAY) == [Prepare(INTERMEDIATE, 1, Reason.SCHEDULED)]


def test_tainted_root_with_a_ready_successor() -> None:
    now = NB + 200 * DAY
    gens = [root(1, TAINTED), root(2, PREPARED, start=NB + YEAR / 2), inter(3, 1, ACTIVE, start=now - DAY)]
    assert step(gens, now, published={1, 2}) == [
        Activate(2, ROOT, None, Reason.TAINTED), Prune(1, Reason.TAINTED)]
    assert [g.id for g in rotation.bundle_roots(gens, now, POLICY)] == [2]


def test_tainted_root_with_a_successor_not_yet_published_long_enough() -> None:
    now = NB + YEAR / 2 + timedelta(hours=1)
    gens = [root(1, TAINTED), root(2, PREPARED, start=NB + YEAR / 2), inter(3, 1, ACTIVE, start=now - DAY)]
    assert step(gens, now) == [Activate(2, ROOT, None, Reason.TAINTED, lead_waived=True)]


def test_tainted_root_without_successor() -> None:
    now = NB + 100 * DAY
    gens = [root(1, TAINTED), inter(2, 1, ACTIVE, start=now - DAY)]
    assert step(gens, now) == [Prepare(ROOT, None, Reason.TAINTED)]
    gens.append(root(3, PREPARED, start=now))
    assert step(gens, now) == [Activate(3, ROOT, None, Reason.TAINTED, lead_waived=True)]
    gens[2] = dataclasses.replace(gens[2], state=ACTIVE)
    assert rotation.signing_generation(gens) is None  # intermediate 2 sits under the tainted root
    assert step(gens, now) == [Prepare(INTERMEDIATE, 3, Reason.PARENT_ROTATED)]


def test_taint_marks_the_subtree() -> None:
    gens = [root(1, ACTIVE), inter(2, 1, RETIRED), inter(3, 1, ACTIVE), root(4, PREPARED),
            inter(5, 4, PREPARED)]
    assert rotation.generations_under(gens, 1) == {1, 2, 3}
    assert rotation.generations_under(gens, 3) == {3}
    assert rotation.generations_under(gens, 4) == {4, 5}
    with pytest.raises(ValueError, match="no CA generation 9"):
        rotation.generations_under(gens, 9)


# ---- pruning and the bundle -------------------------------------------------------------------

def test_retired_root_pruned_exactly_after_last_leaf_plus_skew() -> None:
    last = NB + 305 * DAY
    gens = [root(1, RETIRED, last=last), root(2, ACTIVE, start=NB + YEAR / 2),
            inter(3, 2, ACTIVE, start=NB + 304 * DAY)]
    boundary = last + POLICY.skew
    assert step(gens, boundary, published={1, 2}) == []
    assert [g.id for g in rotation.bundle_roots(gens, boundary, POLICY)] == [1, 2]
    assert step(gens, boundary + US, published={1, 2}) == [Prune(1, Reason.OUTLIVED)]
    assert [g.id for g in rotation.bundle_roots(gens, boundary + US, POLICY)] == [2]
    assert step(gens, boundary + US, published={2}) == []  # already published without it
    assert step(gens, boundary + US) == []  # no published set given: lifecycle only
    assert rotation.next_check(POLICY, gens, boundary - DAY) == boundary + timedelta(seconds=1)


def test_retired_root_stays_while_an_intermediate_under_it_is_active() -> None:
    gens = [root(1, RETIRED, last=NB), root(2, ACTIVE), inter(3, 1, ACTIVE)]
    assert [g.id for g in rotation.bundle_roots(gens, NB + DAY, POLICY)] == [1, 2]


def test_retired_root_that_signed_nothing_leaves_at_once() -> None:
    gens = [root(1, RETIRED), root(2, ACTIVE)]
    assert [g.id for g in rotation.bundle_roots(gens, NB, POLICY)] == [2]


def test_tainted_root_leaves_the_bundle_at_once() -> None:
    gens = [root(1, TAINTED, last=NB + YEAR), root(2, ACTIVE), root(3, PREPARED)]
    assert [g.id for g in rotation.bundle_roots(gens, NB, POLICY)] == [2, 3]
    assert step(gens, NB, published=[1, 2, 3])[-1] == Prune(1, Reason.TAINTED)


def test_bundle_holds_prepared_and_active_roots_never_intermediates() -> None:
    gens = [root(3, PREPARED), root(1, ACTIVE), inter(2, 1, ACTIVE), inter(4, 1, PREPARED)]
    assert [g.id for g in rotation.bundle_roots(gens, NB, POLICY)] == [1, 3]
    assert rotation.bundle_roots([], NB) == ()


def test_published_must_name_roots_of_the_snapshot() -> None:
    gens = [root(1, ACTIVE), inter(2, 1, ACTIVE)]
    with pytest.raises(ValueError, match="published generation 7"):
        step(gens, NB, published={1, 7})
    with pytest.raises(ValueError, match="published generation 2"):
        step(gens, NB, published={1, 2})


def test_bundle_changed() -> None:
    a, b = root(1, ACTIVE), root(2, PREPARED)
    assert not rotation.bundle_changed([1, 2], [2, 1])
    assert not rotation.bundle_changed([a, b], [2, 1])
    assert rotation.bundle_changed([1], [1, 2])
    assert rotation.bundle_changed([1, 2], [2])
    assert rotation.bundle_changed([], [a])
    assert not rotation.bundle_changed([], [])


# ---- snapshot checks, helpers -----------------------------------------------------------------

def test_inconsistent_snapshots_are_refused() -> None:
    with pytest.raises(ValueError, match="more than one active root"):
        step([root(1, ACTIVE), root(2, ACTIVE)], NB)
    with pytest.raises(ValueError, match="more than one active intermediate"):
        step([root(1, ACTIVE), inter(2, 1, ACTIVE), inter(3, 1, ACTIVE)], NB)
    with pytest.raises(ValueError, match="appears twice"):
        step([root(1, ACTIVE), root(1, PREPARED)], NB)
    with pytest.raises(ValueError, match="parent 9 is not a root"):
        step([root(1, ACTIVE), inter(2, 9, ACTIVE)], NB)
    with pytest.raises(ValueError, match="parent 2 is not a root"):
        step([root(1, ACTIVE), inter(2, 1, ACTIVE), inter(3, 2, PREPARED)], NB)
    with pytest.raises(TypeError):
        step([{"id": 1}], NB)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="timezone-aware"):
        step([], datetime(2026, 1, 1))


def test_signing_generation() -> None:
    assert rotation.signing_generation([]) is None
    assert rotation.signing_generation([root(1, ACTIVE)]) is None
    assert rotation.signing_generation([root(1, ACTIVE), inter(2, 1, PREPARED)]) is None
    assert rotation.signing_generation([root(1, RETIRED), root(3, ACTIVE), inter(2, 1, ACTIVE)]) is None
    active = inter(2, 1, ACTIVE)
    assert rotation.signing_generation([root(1, ACTIVE), active, inter(3, 1, RETIRED)]) == active


def test_next_check() -> None:
    gens = [root(1, ACTIVE), inter(2, 1, ACTIVE)]
    assert rotation.next_check(POLICY, gens, NB) == NB + timedelta(days=3, hours=12)
    gens.append(inter(3, 1, PREPARED, start=NB + timedelta(days=3, hours=12)))
    assert rotation.next_check(POLICY, gens, NB + 4 * DAY) == NB + timedelta(days=5, hours=20)
    assert rotation.next_check(POLICY, [], NB) is None
    half = NB + YEAR / 2
    assert rotation.next_check(POLICY, [root(1, ACTIVE), inter(2, 1, ACTIVE, start=half - DAY)],
                               half - timedelta(hours=1)) == half


def test_next_check_is_always_after_now() -> None:
    gens = [root(1, ACTIVE), inter(2, 1, ACTIVE)]
    boundary = NB + timedelta(days=3, hours=12)
    assert rotation.next_check(POLICY, gens, boundary) == NB + WEEK  # its expiry; the prepare is due now


def test_manual_prepare() -> None:
    assert rotation.manual_prepare([], ROOT) == Prepare(ROOT, None, Reason.SCHEDULED)
    assert rotation.manual_prepare([root(1, ACTIVE)], INTERMEDIATE) == Prepare(
        INTERMEDIATE, 1, Reason.SCHEDULED)
    with pytest.raises(ValueError, match="no active root"):
        rotation.manual_prepare([root(1, PREPARED)], INTERMEDIATE)


def test_manual_prepare_keeps_one_prepared_generation_of_a_kind() -> None:
    with pytest.raises(ValueError, match="root generation 2 is already prepared: activate it, or taint it"):
        rotation.manual_prepare([root(1, ACTIVE), root(2, PREPARED)], ROOT)
    waiting = [root(1, ACTIVE), inter(2, 1, ACTIVE), inter(3, 1, PREPARED)]
    with pytest.raises(ValueError, match="intermediate generation 3 is already prepared"):
        rotation.manual_prepare(waiting, INTERMEDIATE)
    # withdrawn (tainted) or activated, it no longer holds the place
    assert rotation.manual_prepare([root(1, ACTIVE), root(2, TAINTED)], ROOT) == Prepare(
        ROOT, None, Reason.SCHEDULED)
    # an intermediate prepared under a root that is no longer active does not count
    under_old = [root(1, RETIRED), root(4, ACTIVE), inter(3, 1, PREPARED)]
    assert rotation.manual_prepare(under_old, INTERMEDIATE) == Prepare(INTERMEDIATE, 4, Reason.SCHEDULED)


def test_manual_activate() -> None:
    now = NB + 10 * DAY
    gens = [root(1, ACTIVE), root(2, PREPARED, prepared_at=now - timedelta(hours=1), start=now),
            inter(3, 1, ACTIVE, start=now - DAY), inter(4, 1, PREPARED, start=now - DAY)]
    with pytest.raises(ValueError, match="root generation 2 is published only from"):
        rotation.manual_activate(POLICY, gens, ROOT, now)
    assert rotation.manual_activate(POLICY, gens, ROOT, now, waive_lead=True) == Activate(
        2, ROOT, 1, Reason.SCHEDULED, lead_waived=True)
    assert rotation.manual_activate(POLICY, gens, ROOT, now + DAY) == Activate(2, ROOT, 1, Reason.SCHEDULED)
    assert rotation.manual_activate(POLICY, gens, INTERMEDIATE, now) == Activate(
        4, INTERMEDIATE, 3, Reason.SCHEDULED)
    with pytest.raises(ValueError, match="no prepared intermediate generation"):
        rotation.manual_activate(POLICY, gens[:3], INTERMEDIATE, now)
    with pytest.raises(ValueError, match="no active root"):
        rotation.manual_activate(POLICY, [root(1, PREPARED)], INTERMEDIATE, now)


# ---- the whole loop, as the service runs it ---------------------------------------------------

class Journal:
    """A tiny in-memory journal that applies actions the way the service must."""

    def __init__(self, policy: RotationPolicy = POLICY) -> None:
        self.policy = policy
        self.gens: dict[int, Generation] = {}
        self.published: set[int] = set()
        self.log: list[rotation.Action] = []

    def tick(self, now: datetime) -> list[rotation.Action]:
        done: list[rotation.Action] = []
        for _ in range(10):
            actions = x509_only(rotation.next_step(self.policy, self.gens.values(), now,
                                                   published=self.published))
            if not actions:
                break
            for action in actions:
                self.apply(action, now)
            done += actions
        self.published = {g.id for g in rotation.bundle_roots(self.gens.values(), now, self.policy)}
        self.log += done
        return done

    def apply(self, action: rotation.Action, now: datetime) -> None:
        match action:
            case Prepare(kind=kind, parent_id=parent):
                gid = len(self.gens) + 1
                ttl = YEAR if kind is ROOT else WEEK
                end = now + ttl if parent is None else min(now + ttl, self.gens[parent].not_after)
                self.gens[gid] = Generation(gid, kind, PREPARED, now, end, now, parent)
            case Activate(generation_id=gid, retires=old):
                self._set(gid, ACTIVE)
                if old is not None:
                    self._set(old, RETIRED)
            case Withdraw(generation_id=gid):
                self._set(gid, RETIRED)
            case Prune(generation_id=gid):
                self.published.discard(gid)

    def _set(self, gid: int, state: State) -> None:
        g = self.gens[gid]
        self.gens[gid] = dataclasses.replace(g, state=rotation.transition(g.state, state))


def test_a_fresh_ca_converges_in_one_tick() -> None:
    journal = Journal()
    assert journal.tick(NB) == [
        Prepare(ROOT, None, Reason.BOOTSTRAP),
        Activate(1, ROOT, None, Reason.BOOTSTRAP, lead_waived=True),
        Prepare(INTERMEDIATE, 1, Reason.BOOTSTRAP),
        Activate(2, INTERMEDIATE, None, Reason.BOOTSTRAP),
    ]
    assert journal.tick(NB) == []
    assert rotation.signing_generation(journal.gens.values()) == journal.gens[2]


def test_following_next_check_for_a_year_and_a_half() -> None:
    """Event by event: each kind keeps exactly one active generation, roots change as planned."""
    journal = Journal()
    now = NB
    journal.tick(now)
    end = NB + YEAR + YEAR / 2
    while (upcoming := rotation.next_check(POLICY, journal.gens.values(), now)) and upcoming <= end:
        now = upcoming
        journal.tick(now)
        gens = list(journal.gens.values())
        assert rotation.signing_generation(gens) is not None
        for g in gens:
            if g.kind is INTERMEDIATE and g.state is ACTIVE:
                assert journal.gens[g.parent_id or 0].state is ACTIVE
        assert all(now < g.not_after for g in gens if g.state is ACTIVE)
    roots = [a for a in journal.log if isinstance(a, Activate) and a.kind is ROOT]
    assert [a.reason for a in roots] == [Reason.BOOTSTRAP, Reason.SCHEDULED, Reason.SCHEDULED]
    assert not any(a.lead_waived for a in roots[1:])
    prunes = [a for a in journal.log if isinstance(a, Prune)]
    # No leaf was recorded: a retired root leaves as soon as its last intermediate is replaced.
    first, second, *_ = sorted(g.id for g in journal.gens.values() if g.kind is ROOT)
    assert [(p.generation_id, p.reason) for p in prunes] == [(first, Reason.OUTLIVED),
                                                             (second, Reason.OUTLIVED)]
    inter_activations = [a for a in journal.log if isinstance(a, Activate) and a.kind is INTERMEDIATE]
    assert len(inter_activations) > 150


# ---- roots of an upstream authority (external_roots) -----------------------------------------

def chain_steps(gens: list[Generation], now: datetime, *,
                external_roots: bool = False) -> list[rotation.Action]:
    """next_step's root and intermediate actions (JWT keys are not at issue here)."""
    return [a for a in rotation.next_step(POLICY, gens, now, external_roots=external_roots)
            if a.kind is not Kind.JWT]


def test_external_roots_are_never_prepared_at_bootstrap_half_life_or_expiry() -> None:
    assert chain_steps([], NB, external_roots=True) == []
    half = [root(1, ACTIVE), inter(2, 1, ACTIVE, start=NB + YEAR * 0.6 - DAY)]
    assert chain_steps(half, NB + YEAR * 0.6, external_roots=True) == []
    assert Prepare(ROOT, None, Reason.SCHEDULED) in chain_steps(half, NB + YEAR * 0.6)
    expired = [root(1, ACTIVE), inter(2, 1, ACTIVE, start=NB + YEAR - WEEK)]
    assert chain_steps(expired, NB + YEAR + DAY, external_roots=True) == []  # nothing to sign under


def test_intermediates_rotate_under_an_external_root_past_its_half_life() -> None:
    """The upstream's schedule is not meshca's: a root meshca cannot replace must not hold up
    its intermediates (which a pending root Prepare would)."""
    now = NB + YEAR * 0.7
    gens = [root(1, ACTIVE), inter(2, 1, ACTIVE, start=now - WEEK * 0.9)]
    assert chain_steps(gens, now, external_roots=True) == [
        Prepare(INTERMEDIATE, 1, Reason.SCHEDULED)]


def test_a_recorded_external_root_is_activated_once_published_long_enough() -> None:
    now = NB + DAY * 30  # long before the active root's activate_at
    new = root(3, PREPARED, start=now, prepared_at=now)
    gens = [root(1, ACTIVE), inter(2, 1, ACTIVE, start=now - DAY), new]
    assert chain_steps(gens, now, external_roots=True) == []
    assert rotation.next_check(POLICY, gens, now, external_roots=True) == now + POLICY.publish_lead
    later = now + POLICY.publish_lead
    assert chain_steps(gens, later, external_roots=True) == [
        Activate(3, ROOT, 1, Reason.SCHEDULED)]
    assert chain_steps(gens, later) == []  # meshca's own root waits for activate_at


def test_the_first_external_root_signs_at_once_and_an_expired_one_is_replaced() -> None:
    first = [root(1, PREPARED)]
    assert chain_steps(first, NB, external_roots=True) == [
        Activate(1, ROOT, None, Reason.BOOTSTRAP, lead_waived=True)]
    end = NB + YEAR
    gens = [root(1, ACTIVE), root(2, PREPARED, start=end - timedelta(hours=1),
                                  prepared_at=end - timedelta(hours=1))]
    assert chain_steps(gens, end, external_roots=True) == [
        Activate(2, ROOT, 1, Reason.EXPIRED, lead_waived=True)]
