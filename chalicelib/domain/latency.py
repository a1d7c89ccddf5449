"""Latency histograms in fixed buckets, shared by the gateway (which counts) and the control
plane (which stores per minute and answers percentiles): a bounded, constant-time record per
request, and histograms that add up across minutes and gateways."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

# Bucket upper bounds in milliseconds: 0.1 ms steps to 2 ms, then wider.
BOUNDS_MS: tuple[float, ...] = (
    *(round(0.1 * i, 1) for i in range(1, 21)),
    *(2.5, 3, 4, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750),
    *(1000, 2000, 5000, 10000, 30000, 60000, float("inf")),
)


def bucket_of(milliseconds: float) -> int:
    return bisect.bisect_left(BOUNDS_MS, milliseconds)


def add_buckets(into: list[int], more: Sequence[int]) -> list[int]:
    """``into`` plus ``more``, bucket by bucket (a shorter list counts as zeros)."""
    size = len(BOUNDS_MS)
    total = list(into) + [0] * (size - len(into))
    for index, count in enumerate(more[:size]):
        total[index] += int(count)
    return total


def percentile(buckets: Sequence[int], fraction: float) -> float | None:
    """The upper bound (ms) of the bucket holding the ``fraction`` quantile; None when
    nothing was counted (the open last bucket answers with the last finite bound)."""
    calls = sum(buckets)
    if not calls:
        return None
    rank = fraction * calls
    seen = 0
    for bound, count in zip(BOUNDS_MS, buckets, strict=False):
        seen += count
        if seen >= rank and count:
            return bound if bound != float("inf") else BOUNDS_MS[-2]
    return BOUNDS_MS[-2]
