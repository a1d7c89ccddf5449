"""API statistics per stage: calls, answers by class (2xx/4xx/5xx) and latency percentiles,
kept in the fixed buckets of :mod:`chalicelib.domain.latency` (a bounded, constant-time record
per request; the control plane adds the gateway's minutes up the same way)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chalicelib.domain.latency import BOUNDS_MS, add_buckets, bucket_of, percentile


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
        self.buckets[bucket_of(seconds * 1000)] += 1

    def merge(self, other: StageStats) -> None:
        self.calls += other.calls
        for family, count in other.by_class.items():
            self.by_class[family] = self.by_class.get(family, 0) + count
        self.buckets = add_buckets(self.buckets, other.buckets)

    def percentile(self, fraction: float) -> float | None:
        """The upper bound (ms) of the bucket holding the ``fraction`` quantile."""
        return percentile(self.buckets, fraction)

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            **{f"status{family}": n for family, n in self.by_class.items()},
            "latencyP50Ms": self.percentile(0.5),
            "latencyP90Ms": self.percentile(0.9),
            "latencyP99Ms": self.percentile(0.99),
        }
