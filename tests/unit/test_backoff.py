from __future__ import annotations

import random

import pytest

from meshca.core.backoff import ExponentialBackoff, FailureBackoff


def test_allowance_then_doubling_waits_up_to_the_longest() -> None:
    backoff = FailureBackoff(allowed=3, first=10.0, longest=35.0)
    assert [backoff.failed("a", 0.0) for _ in range(2)] == [0.0, 0.0]
    assert backoff.wait("a", 0.0) == 0.0
    assert backoff.failed("a", 0.0) == 10.0
    assert backoff.wait("a", 4.0) == 6.0
    assert backoff.failed("a", 10.0) == 20.0
    assert backoff.failed("a", 30.0) == 35.0  # 40 capped
    assert backoff.wait("a", 65.0) == 0.0


def test_sources_are_independent_and_success_forgets() -> None:
    backoff = FailureBackoff(allowed=1, first=5.0)
    backoff.failed("a", 0.0)
    assert backoff.wait("a", 1.0) == 4.0
    assert backoff.wait("b", 1.0) == 0.0
    backoff.succeeded("a")
    assert backoff.wait("a", 1.0) == 0.0


def test_memory_is_bounded_oldest_first() -> None:
    backoff = FailureBackoff(allowed=1, first=5.0, max_sources=3)
    for source in "abcd":
        backoff.failed(source, 0.0)
    assert backoff.wait("a", 1.0) == 0.0  # evicted
    assert all(backoff.wait(s, 1.0) == 4.0 for s in "bcd")


@pytest.mark.parametrize("args", [(0, 1.0), (1, 0.0), (1, 10.0, 5.0)])
def test_bad_settings_are_refused(args: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        FailureBackoff(*args)  # type: ignore[arg-type]


class _Draws(random.Random):
    def __init__(self, *values: float) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def test_exponential_backoff_doubles_to_the_cap_with_full_jitter() -> None:
    backoff = ExponentialBackoff(1.0, 10.0, rng=_Draws(0.999, 0.5, 0.999, 0.999, 0.0, 0.25))
    waits = [backoff.failed() for _ in range(6)]
    assert waits == pytest.approx([0.999, 1.0, 3.996, 7.992, 0.05, 2.5])  # 0.0 -> the floor
    assert backoff.failures == 6
    assert backoff.ceiling == 10.0
    backoff.reset()
    assert backoff.ceiling == 1.0


def test_exponential_backoff_waits_stay_within_the_ceiling() -> None:
    backoff = ExponentialBackoff(1.0, 60.0, rng=random.Random(7))
    for _ in range(50):
        ceiling = backoff.ceiling
        assert 0.05 <= backoff.failed() <= ceiling


@pytest.mark.parametrize("args", [(0.0, 1.0), (2.0, 1.0)])
def test_exponential_backoff_bad_settings_are_refused(args: tuple[float, float]) -> None:
    with pytest.raises(ValueError):
        ExponentialBackoff(*args)
