"""Metrics read from a trial's log as it runs, Katib style: ``name=value`` pairs on any line.

A :class:`MetricCollector` is fed one line at a time and hands back the new values of the
objective metric with their step, ready to be reported as intermediate values (so a pruner can
stop the trial early); it also keeps the minimum, maximum and latest value of every metric.
"""

from __future__ import annotations

import math
import re
from typing import Literal

# Katib's default for the TEXT metrics format: group 1 is the name, group 2 the value.
DEFAULT_METRIC_REGEX = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"

STEP_NAMES = ("step", "epoch")  # a value of one of these on the line is the step of the others

Strategy = Literal["min", "max", "latest"]


class MetricCollector:
    """Metrics of one trial, parsed from its log lines. Pure: no I/O, no clock."""

    def __init__(self, regex: str, names: list[str], objective: str) -> None:
        if not objective:
            raise ValueError("the objective metric needs a name")
        self._pattern = re.compile(regex or DEFAULT_METRIC_REGEX)
        if self._pattern.groups < 2:
            raise ValueError(
                f"the metric regex {regex!r} needs two groups: the metric's name and its value"
            )
        # The default pattern cannot match a line without "=": skip those without a scan.
        self._needs_equals = self._pattern.pattern == DEFAULT_METRIC_REGEX
        self.objective = objective
        self._names = frozenset([*names, objective]) if names else None
        self._count = 0  # objective observations so far
        self._min: dict[str, float] = {}
        self._max: dict[str, float] = {}
        self._latest: dict[str, float] = {}

    def feed(self, line: str) -> list[tuple[int, float]]:
        """Parse one log line; the objective values it carries, each with its step."""
        if self._needs_equals and "=" not in line:
            return []
        found: list[tuple[str, float]] = []
        step: int | None = None
        step_rank = len(STEP_NAMES)
        for match in self._pattern.finditer(line):
            name, raw = match.group(1), match.group(2)
            if not name or not raw:
                continue
            try:
                value = float(raw)
            except ValueError:
                continue
            if not math.isfinite(value):
                continue
            lowered = name.lower()
            if lowered in STEP_NAMES and value.is_integer() and value >= 0:
                rank = STEP_NAMES.index(lowered)
                if rank < step_rank:  # "step" wins over "epoch" on the same line
                    step, step_rank = int(value), rank
            if self._names is None or name in self._names:
                found.append((name, value))
        values: list[tuple[int, float]] = []
        for name, value in found:
            self._record(name, value)
            if name == self.objective:
                self._count += 1
                values.append((self._count if step is None else step, value))
        return values

    def _record(self, name: str, value: float) -> None:
        low = self._min.get(name)
        if low is None or value < low:
            self._min[name] = value
        high = self._max.get(name)
        if high is None or value > high:
            self._max[name] = value
        self._latest[name] = value

    def summary(self) -> dict[str, dict[str, float]]:
        """Per metric seen: ``{"min": .., "max": .., "latest": ..}``."""
        return {
            name: {"min": self._min[name], "max": self._max[name], "latest": latest}
            for name, latest in self._latest.items()
        }

    def value(self, strategy: Strategy = "latest", name: str | None = None) -> float | None:
        """One metric's (the objective's by default) min, max or latest value; None if unseen."""
        name = name or self.objective
        table = {"min": self._min, "max": self._max, "latest": self._latest}[strategy]
        return table.get(name)

    @property
    def observations(self) -> int:
        """How many objective values were seen."""
        return self._count
