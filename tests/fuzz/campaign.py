"""What every fuzzing campaign shares: running a Hypothesis strategy for N inputs without
stopping at the first bad one (a campaign counts; the normal suite's tests assert the count of
problems is 0), and the tally of outcomes that scripts/fuzz prints and docs/reliability.md quotes."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

T = TypeVar("T")
MAX_SHOWN = 20  # problems kept with their input, per campaign


@dataclass
class Tally:
    """Outcomes by name, problems (an outcome the oracle refuses) with the input that caused
    them, and the wall time."""

    name: str
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, outcome: str, problem: str | None = None, shown: Any = None) -> None:
        with self._lock:
            self.outcomes[outcome] += 1
            if problem is not None:
                self.problems[problem] += 1
                if len(self.examples) < MAX_SHOWN:
                    self.examples.append(f"{problem}: {str(shown)[:600]}")

    @property
    def inputs(self) -> int:
        return sum(self.outcomes.values())

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def done(self) -> Tally:
        self.finished = time.monotonic()
        return self

    def summary(self) -> dict[str, Any]:
        return {"campaign": self.name, "inputs": self.inputs, "seconds": round(self.seconds, 1),
                "outcomes": dict(self.outcomes.most_common()), "problems": dict(self.problems),
                "examples": self.examples}

    def render(self) -> str:
        lines = [f"== {self.name}: {self.inputs} inputs in {self.seconds:.1f} s "
                 f"({self.inputs / max(self.seconds, 1e-9):.0f}/s), {sum(self.problems.values())} problems"]
        lines += [f"   {count:>8}  {outcome}" for outcome, count in self.outcomes.most_common()]
        lines += [f"   PROBLEM {count:>6}  {problem}" for problem, count in self.problems.items()]
        lines += [f"   e.g. {example}" for example in self.examples[:5]]
        return "\n".join(lines)

    def json(self) -> str:
        return json.dumps(self.summary())

    def absorb(self, summary: dict[str, Any]) -> None:
        """Add another process's counts (its `summary()`) to these: a campaign run in jobs."""
        with self._lock:
            self.outcomes.update(summary["outcomes"])
            self.problems.update(summary["problems"])
            self.examples += summary["examples"][:max(0, MAX_SHOWN - len(self.examples))]


class TimeUp(Exception):
    """The campaign's time ran out: it stops with the counts it has."""


def run_strategy(strategy: st.SearchStrategy[T], examples: int, each: Callable[[T], bool | None],
                 *, seed_value: int = 17, seconds: float | None = None, batch: int = 1) -> None:
    """Call `each` on generated inputs until `examples` of them counted (fewer if the strategy's
    space is smaller, or if `seconds` run out first); an input for which `each` returns False
    (e.g. one the oracle cannot judge, skipped) does not count. No shrinking and no example
    database: `each` records, it does not raise. `batch` > 1 draws that many inputs per
    Hypothesis example, which spreads the engine's own cost per example (its mutation of
    earlier examples) over the batch: the campaigns use it, the normal suite's tests keep 1,
    so that a failure shows one input."""
    stop_at = None if seconds is None else time.monotonic() + seconds
    remaining = [examples]

    def bounded(values: list[T]) -> None:
        for value in values:
            if remaining[0] <= 0:
                return
            if stop_at is not None and time.monotonic() > stop_at:
                raise TimeUp
            if each(value) is not False:
                remaining[0] -= 1

    for round_ in range(1000):
        before = remaining[0]

        @seed(seed_value + round_)
        @settings(max_examples=-(-before // batch), deadline=None, database=None,
                  phases=[Phase.generate], report_multiple_bugs=False,
                  suppress_health_check=list(HealthCheck), derandomize=False)
        @given(st.lists(strategy, min_size=batch, max_size=batch))
        def run(values: list[T]) -> None:
            bounded(values)

        try:
            run()
        except TimeUp:
            return
        if remaining[0] <= 0 or remaining[0] == before:  # done, or nothing new to give
            return
