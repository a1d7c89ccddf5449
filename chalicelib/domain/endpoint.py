"""Endpoint, stage and stage-resource (endpoint model) shapes: the SDK's ``Endpoint``,
``EndpointStage``, ``EndpointModel``, ``EndpointCreateBody`` and ``StageCreateBody``."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from chalicelib.domain.catalog import Flavor
from chalicelib.domain.common import (
    Description,
    ListQuery,
    ResourceName,
    WireDatetime,
    WireModel,
)

MAX_STAGE_MODELS = 10
MAX_PODS = 20
_CPU = re.compile(r"^(\d+(\.\d+)?)(m?)$")
_MEMORY = re.compile(r"^(\d+(\.\d+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?$")
_MEMORY_UNITS = {
    None: 1,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def cpu_cores(value: str) -> float:
    """A Kubernetes CPU quantity (``2``, ``0.5``, ``500m``) in cores."""
    found = _CPU.match(value.strip())
    if not found or float(found.group(1)) <= 0:
        raise ValueError("cpu is cores: 1, 0.5 or 500m")
    cores = float(found.group(1))
    return cores / 1000 if found.group(3) else cores


def memory_bytes(value: str) -> int:
    """A Kubernetes memory quantity (``2Gi``, ``512Mi``, ``1G``) in bytes."""
    found = _MEMORY.match(value.strip())
    if not found or float(found.group(1)) <= 0:
        raise ValueError("memory is a quantity: 2Gi, 512Mi or 1G")
    return int(float(found.group(1)) * _MEMORY_UNITS[found.group(3)])


def _check_cpu(value: str | None) -> str | None:
    if value is not None:
        cpu_cores(value)
    return value


def _check_memory(value: str | None) -> str | None:
    if value is not None:
        memory_bytes(value)
    return value


class ResourceOptionDetail(WireModel):
    """What each pod of a stage resource holds (within the stage's flavor)."""

    cpu: Annotated[str | None, AfterValidator(_check_cpu)] = None
    memory: Annotated[str | None, AfterValidator(_check_memory)] = None
    gpu: Annotated[str, StringConstraints(pattern=r"^\d+$")] | None = None


class EndpointModelResource(WireModel):
    model_id: Annotated[str, StringConstraints(min_length=1, max_length=36)]
    resource_option_detail: ResourceOptionDetail | None = None
    pod_count: Annotated[int, Field(ge=1, le=MAX_PODS)] = 1
    pod_auto_scale_enable: bool | None = None
    scale_metric_code: Annotated[str, StringConstraints(pattern=r"^(CPU|MEMORY)$")] | None = None
    scale_metric_target: Annotated[int, Field(ge=1, le=100)] | None = None
    apigw_resource_uri: Annotated[
        str | None,
        StringConstraints(pattern=r"^(/[A-Za-z0-9._-]+)+$", max_length=200),
        Field(
            description="A path of the stage's URL that infers with this model (e.g. "
            "/inference): a body with instances goes to OIP v1 predict, inputs to v2 infer"
        ),
    ] = None
    max_pod_count: Annotated[
        int | None,
        Field(
            ge=1,
            le=MAX_PODS,
            description="The pod autoscaler's upper bound (podCount is the lower); "
            f"2 x podCount (at most {MAX_PODS}) when not given",
        ),
    ] = None
    description: Description | None = None

    @model_validator(mode="after")
    def _autoscaler(self) -> EndpointModelResource:
        if self.pod_auto_scale_enable:
            if self.scale_metric_code is None or self.scale_metric_target is None:
                raise ValueError(
                    "the pod autoscaler needs scaleMetricCode (CPU or MEMORY) and "
                    "scaleMetricTarget (1-100 %)"
                )
            if self.max_pod_count is not None and self.max_pod_count < self.pod_count:
                raise ValueError("maxPodCount must be at least podCount")
        return self

    def autoscale_bounds(self) -> tuple[int, int]:
        """The pod autoscaler's bounds: podCount .. maxPodCount."""
        upper = self.max_pod_count or min(MAX_PODS, 2 * self.pod_count)
        return self.pod_count, upper


ModelResources = Annotated[
    list[EndpointModelResource],
    Field(min_length=1, max_length=MAX_STAGE_MODELS, description="1 to 10 models per stage"),
]


class StageSpec(WireModel):
    """What a stage runs on: flavor, nodes and the node autoscaler, and its models."""

    flavor_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    endpoint_model_resource_list: ModelResources
    node_count: Annotated[int, Field(ge=1, le=10)] = 1
    description: Description | None = None
    use_log: bool | None = None
    ca_enable: bool | None = None
    ca_min_node_count: Annotated[int, Field(ge=1, le=10)] | None = None
    ca_max_node_count: Annotated[int, Field(ge=1, le=10)] | None = None
    ca_scale_down_enable: bool | None = None
    ca_scale_down_util_thresh: Annotated[int, Field(ge=1, le=100)] | None = None
    ca_scale_down_unneeded_time: Annotated[int, Field(ge=1, le=1440)] | None = None
    ca_scale_down_delay_after_add: Annotated[int, Field(ge=1, le=1440)] | None = None

    @model_validator(mode="after")
    def _node_autoscaler(self) -> StageSpec:
        if not self.ca_enable:
            return self
        if self.ca_min_node_count is None or self.ca_max_node_count is None:
            raise ValueError("the node autoscaler needs caMinNodeCount and caMaxNodeCount")
        if self.ca_min_node_count > self.ca_max_node_count:
            raise ValueError("caMinNodeCount must not be more than caMaxNodeCount")
        if not self.ca_min_node_count <= self.node_count <= self.ca_max_node_count:
            raise ValueError("nodeCount must be within caMinNodeCount..caMaxNodeCount")
        return self

    @model_validator(mode="after")
    def _resource_paths(self) -> StageSpec:
        paths = [r.apigw_resource_uri for r in self.endpoint_model_resource_list]
        given = [p for p in paths if p is not None]
        if len(given) != len(set(given)):
            raise ValueError("each model of a stage needs its own apigwResourceUri")
        return self


class EndpointCreate(StageSpec):
    endpoint_name: ResourceName
    parent_pipeline_run_id: Annotated[str, Field(max_length=36)] | None = None


class StageCreate(StageSpec):
    endpoint_id: Annotated[str, StringConstraints(min_length=1, max_length=36)]
    apigw_stage_name: ResourceName


class EndpointQuery(ListQuery):
    endpoint_id_list: list[str] = []
    endpoint_name_list: list[str] = []


class StageQuery(ListQuery):
    endpoint_id: str | None = None


class EndpointModelQuery(ListQuery):
    endpoint_stage_id: str | None = None


class ApigwStage(WireModel):
    stage_id: str
    deploy_status: str
    stage_url: str | None


class AutoScaler(WireModel):
    enable: bool = False
    min_node_count: int | None = None
    max_node_count: int | None = None
    scale_down_enable: bool | None = None
    scale_down_util_thresh_percentage: int | None = None
    scale_down_unneeded_minute: int | None = None
    scale_down_delay_after_add_minute: int | None = None


class EndpointModel(WireModel):
    endpoint_model_id: str
    endpoint_id: str
    endpoint_stage_id: str
    endpoint_model_status_code: str
    model_id: str
    model: dict[str, Any]
    stage: ApigwStage
    pod_count: int
    running_pod_count: int
    pod_auto_scale_enable: bool = False
    scale_metric_code: str | None = None
    scale_metric_target: int | None = None
    max_pod_count: int | None = None
    resource_option_detail: ResourceOptionDetail | None = None
    apigw_resource_uri: str | None = None  # None: the SDK picks the route by the body
    apigw_endpoint_uri: str | None
    created_datetime: WireDatetime


class EndpointStage(WireModel):
    endpoint_stage_id: str
    endpoint_id: str
    endpoint_stage_name: str
    apigw_stage_id: str
    apigw_stage_name: str
    endpoint_stage_status_code: str
    status_reason: str | None = None
    deploy_status: str
    is_default_stage: bool
    apigw_stage_url: str | None
    flavor: Flavor
    node_count: int
    pod_count: int
    auto_scaler: AutoScaler
    description: str | None = None
    endpoint_model_list: list[EndpointModel]
    created_datetime: WireDatetime
    updated_datetime: WireDatetime


class Endpoint(WireModel):
    endpoint_id: str
    endpoint_name: str
    description: str | None
    endpoint_status_code: str
    status_reason: str | None = None
    default_stage: EndpointStage | None = None
    endpoint_stage_list: list[EndpointStage]
    app_key: str
    created_datetime: WireDatetime
    updated_datetime: WireDatetime


class ApiStatisticsQuery(WireModel):
    """``GET /endpoint-stages/{id}/api-statistics``: minutes from ``startTime`` (default an
    hour ago) to ``endTime`` (default now), at most 31 days."""

    start_time: datetime | None = None
    end_time: datetime | None = None


class ApiStatisticsPoint(WireModel):
    """Calls in one minute (``time`` is the minute's start, UTC) or in the whole window."""

    time: WireDatetime | None = None
    calls: int
    status2xx: Annotated[int, Field(alias="status2xx")]
    status4xx: Annotated[int, Field(alias="status4xx")]
    status5xx: Annotated[int, Field(alias="status5xx")]
    latency_p50_ms: float | None
    latency_p90_ms: float | None
    latency_p99_ms: float | None


class ApiStatistics(WireModel):
    endpoint_id: str
    endpoint_stage_id: str
    start_time: WireDatetime
    end_time: WireDatetime
    total: ApiStatisticsPoint
    series: list[ApiStatisticsPoint]


class GatewayStat(WireModel):
    """One stage's calls in one minute, as the gateway pushes them."""

    endpoint_stage_id: Annotated[str, StringConstraints(min_length=1, max_length=36)]
    minute: Annotated[int, Field(ge=0, description="the minute's start, Unix seconds")]
    calls: Annotated[int, Field(ge=0)]
    status2xx: Annotated[int, Field(ge=0, alias="status2xx")] = 0
    status4xx: Annotated[int, Field(ge=0, alias="status4xx")] = 0
    status5xx: Annotated[int, Field(ge=0, alias="status5xx")] = 0
    buckets: list[Annotated[int, Field(ge=0)]]


class GatewayStats(WireModel):
    stats: Annotated[list[GatewayStat], Field(max_length=10_000)]
