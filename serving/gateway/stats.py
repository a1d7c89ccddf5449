"""API statistics per stage: calls, answers by class (2xx/4xx/5xx) and latency percentiles,
kept in fixed buckets (a bounded, constant-time record per request)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

# Latency bucket upper bounds in milliseconds: 0.1 ms steps to 2 ms, then wider.
BOUNDS_MS: tuple[float, ...] = (
    *(round(0.1 * i, 1) for i in range(1, 21)),
    *(2.5, 3, 4, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750),
    *(1000, 2000, 5000, 10000, 30000, 60000, float("inf")),
)


@dataclass
class StageStats:
    calls: int = 0
    by_class: dict[str, int] = field(default_factory=lambda: {"2xx": 0, "4xx": 0, "5xx": 0})
    buckets: list[int] = field(default_factory=lambda: [0] * len(BOUNDS_MS))

    def record(self, status: int, seconds: float) -> None:
        self.calls += 1
        family = f"{status // 100}xx"
        if family in self.by_class:
            self.by_class[family] += 1
        self.buckets[bisect.bisect_left(BOUNDS_MS, seconds * 1000)] += 1

    def percentile(self, fraction: float) -> float | None:
        """The upper bound (ms) of the bucket holding the ``fraction`` quantile."""
        if not self.calls:
            return None
        rank = fraction * self.calls
        seen = 0
        for bound, count in zip(BOUNDS_MS, self.buckets, strict=True):
            seen += count
            if seen >= rank and count:
                return bound
        return BOUNDS_MS[-2]

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            **{f"status{family}": n for family, n in self.by_class.items()},
            "latencyP50Ms": self.percentile(0.5),
            "latencyP90Ms": self.percentile(0.9),
            "latencyP99Ms": self.percentile(0.99),
        }
