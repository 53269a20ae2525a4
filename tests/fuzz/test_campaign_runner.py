"""The campaign runner itself: inputs the oracle cannot judge do not count, and the counts of
jobs run in other processes add up (scripts/fuzz --jobs)."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.fuzz.campaign import MAX_SHOWN, Tally, run_strategy


def test_an_input_that_is_not_judged_does_not_count_towards_the_total() -> None:
    seen: list[int] = []
    judged: list[int] = []

    def each(value: int) -> bool:
        seen.append(value)
        if value % 2:
            return False  # skipped: another one is drawn in its place
        judged.append(value)
        return True

    run_strategy(st.integers(0, 10**9), 50, each, seed_value=3)
    assert len(judged) == 50
    assert len(seen) > len(judged)  # about half were odd, and were replaced


def test_tallies_of_several_jobs_add_up() -> None:
    first, second = Tally("job 0"), Tally("job 1")
    for _ in range(3):
        first.record("OK")
    second.record("OK")
    second.record("INVALID_ARGUMENT")
    for index in range(MAX_SHOWN + 5):
        second.record("UNKNOWN", "undocumented UNKNOWN", index)
    total = Tally("campaign")
    total.absorb(first.summary())
    total.absorb(second.summary())
    assert total.outcomes == {"OK": 4, "INVALID_ARGUMENT": 1, "UNKNOWN": MAX_SHOWN + 5}
    assert total.problems == {"undocumented UNKNOWN": MAX_SHOWN + 5}
    assert len(total.examples) == MAX_SHOWN  # the examples stay bounded
    assert total.inputs == 5 + MAX_SHOWN + 5
