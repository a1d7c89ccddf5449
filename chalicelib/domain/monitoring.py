"""Monitoring samples of jobs (per node) and the chart series served from them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from chalicelib.domain.common import WireDatetime, WireModel

MAX_SAMPLES_PER_REPORT = 1000


class MetricSample(WireModel):
    time: datetime
    node: Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[\w.-]+$")]
    cpu_percent: Annotated[float, Field(ge=0, le=100_000)] = 0.0
    memory_bytes: Annotated[int, Field(ge=0)] = 0
    gpu_percent: Annotated[float, Field(ge=0, le=100_000)] | None = None
    gpu_memory_bytes: Annotated[int, Field(ge=0)] | None = None


class MetricReport(WireModel):
    samples: Annotated[list[MetricSample], Field(max_length=MAX_SAMPLES_PER_REPORT)]


class MonitoringQuery(WireModel):
    since: datetime | None = None
    until: datetime | None = None
    points: Annotated[int, Field(ge=1, le=1000)] = 300


class MetricPoint(WireModel):
    time: WireDatetime
    cpu_percent: float
    memory_bytes: int
    gpu_percent: float | None = None
    gpu_memory_bytes: int | None = None


class NodeSeries(WireModel):
    node: str
    points: list[MetricPoint]


class Monitoring(WireModel):
    resource_id: str
    node_list: list[NodeSeries]
    zombie: bool = False
    zombie_since: WireDatetime | None = None
