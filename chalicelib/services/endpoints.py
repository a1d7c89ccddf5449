"""Endpoints, their stages and stage resources (endpoint models), and how a stage's pods are
deployed: one Ray job per stage (``python -m serving.deploy stage {id}``) asks for the
stage's deployment, starts the pods and reports their addresses; the gateway routes each
ACTIVE stage's key to its pods (``gateway_routes``, polled by the gateway).

An endpoint is created with its default stage; more stages can be added. A stage other
than the default can be deleted; an endpoint only when its default stage is all that is
left. Deleting takes the rows (and so the routes) away at once and submits a teardown job
for the pods. A model in use by a stage is not deleted (``models.DEPENDENTS``).
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from chalicelib.config import get_settings
from chalicelib.dispatch import BackendUnavailableError, JobSubmission, get_backend
from chalicelib.domain import states
from chalicelib.domain.catalog import Flavor
from chalicelib.domain.common import Paging, utc_now
from chalicelib.domain.endpoint import (
    ApiStatistics,
    ApiStatisticsPoint,
    ApiStatisticsQuery,
    Endpoint,
    EndpointCreate,
    EndpointModel,
    EndpointModelQuery,
    EndpointQuery,
    EndpointStage,
    GatewayStat,
    StageCreate,
    StageQuery,
    StageSpec,
    cpu_cores,
    memory_bytes,
)
from chalicelib.domain.latency import add_buckets, percentile
from chalicelib.domain.model import served_by_vllm, serving_paths
from chalicelib.errors import (
    DependentResourceError,
    DuplicateNameError,
    NotFoundError,
    ValidationError,
)
from chalicelib.observability import logger
from chalicelib.services import joblogs, jobs, models
from chalicelib.services.catalog import get_catalog
from chalicelib.store import models as rows
from chalicelib.store.db import Database
from chalicelib.store.repository import get_owned, page

ES = states.EndpointStageStatus
EP = states.EndpointStatus
R = states.StageResourceStatus
RUNNER_KIND = "endpoint-stage"
RESERVED_SEGMENTS = frozenset({"v1", "v2", "openai"})  # a resource path must not shadow them
LOG_KIND = "inference"
SERVING_NAMESPACE = "openmaker-serving"  # serving.deploy.NAMESPACE: the pods' Ray namespace
# An ACTIVE stage untouched this long must have its controller in Ray, or it is redeployed
LOST_PODS_GRACE = timedelta(seconds=float(os.environ.get("OPENMAKER_LOST_PODS_GRACE_SECONDS", 60)))
DEPLOYING = (
    str(ES.CREATE_REQUESTED),
    str(ES.CREATE_IN_PROGRESS),
    str(ES.DEPLOY_IN_PROGRESS),
)  # logs/inference/{appkey}/{stage id}/{source}/
DEFAULT_STAGE = "default"
DISPATCH_GRACE = timedelta(seconds=30)  # a stage not dispatched by then is dispatched by the tick


def _count_uses(session: Session, model_id: str) -> int:
    found = session.scalar(
        select(func.count())
        .select_from(rows.EndpointModel)
        .where(rows.EndpointModel.model_id == model_id)
    )
    return int(found or 0)


models.DEPENDENTS["endpoint stage resource(s)"] = _count_uses


def _invalid(field: str, rule: str, message: str) -> ValidationError:
    return ValidationError(
        f"invalid {field}: {message}", details=[{"field": field, "rule": rule, "message": message}]
    )


def stage_key(stage: rows.EndpointStage) -> str:
    """The first path segment of a stage's URL: the endpoint's id for its default stage (the
    URL clients keep across a default-stage change), the stage's own id for the others."""
    return stage.endpoint_id if stage.is_default else stage.id


def stage_url(stage: rows.EndpointStage) -> str:
    return f"{get_settings().gateway_host}/{stage_key(stage)}"


# -- views ---------------------------------------------------------------------------------


def _endpoint_model_view(
    row: rows.EndpointModel, model: rows.Model, stage: rows.EndpointStage
) -> EndpointModel:
    path = row.spec.get("apigwResourceUri")
    resource = path or f"/{model.name}/v2/models/{model.name}/infer"
    url = stage_url(stage)
    return EndpointModel.model_validate(
        {
            "endpoint_model_id": row.id,
            "endpoint_id": row.endpoint_id,
            "endpoint_stage_id": row.stage_id,
            "endpoint_model_status_code": row.status,
            "model_id": model.id,
            "model": models.to_view(model).model_dump(mode="json", by_alias=True),
            "stage": {
                "stage_id": stage.id,
                "deploy_status": stage.deploy_status,
                "stage_url": url,
            },
            "pod_count": int(row.spec.get("podCount", 1)),
            "running_pod_count": len(row.pods),
            "pod_auto_scale_enable": bool(row.spec.get("podAutoScaleEnable")),
            "scale_metric_code": row.spec.get("scaleMetricCode"),
            "scale_metric_target": row.spec.get("scaleMetricTarget"),
            "max_pod_count": row.spec.get("maxPodCount"),
            "resource_option_detail": row.spec.get("resourceOptionDetail"),
            "apigw_resource_uri": path,  # None: the SDK picks the route by the body
            "apigw_endpoint_uri": f"https://{url}{resource}",
            "created_datetime": row.created_at,
        }
    )


def _stage_view(session: Session, stage: rows.EndpointStage) -> EndpointStage:
    pairs = session.execute(
        select(rows.EndpointModel, rows.Model)
        .join(rows.Model, rows.Model.id == rows.EndpointModel.model_id)
        .where(rows.EndpointModel.stage_id == stage.id)
        .order_by(rows.EndpointModel.created_at, rows.EndpointModel.id)
    ).all()
    spec = stage.spec
    listed = [_endpoint_model_view(resource, model, stage) for resource, model in pairs]
    return EndpointStage.model_validate(
        {
            "endpoint_stage_id": stage.id,
            "endpoint_id": stage.endpoint_id,
            "endpoint_stage_name": stage.name,
            "apigw_stage_id": stage.id,
            "apigw_stage_name": stage.name,
            "endpoint_stage_status_code": stage.status,
            "status_reason": stage.status_reason,
            "deploy_status": stage.deploy_status,
            "is_default_stage": stage.is_default,
            "apigw_stage_url": stage_url(stage),
            "flavor": spec["flavor"],
            "node_count": spec.get("node_count", 1),
            "pod_count": sum(m.pod_count for m in listed),
            "auto_scaler": {
                "enable": bool(spec.get("ca_enable")),
                "min_node_count": spec.get("ca_min_node_count"),
                "max_node_count": spec.get("ca_max_node_count"),
                "scale_down_enable": spec.get("ca_scale_down_enable"),
                "scale_down_util_thresh_percentage": spec.get("ca_scale_down_util_thresh"),
                "scale_down_unneeded_minute": spec.get("ca_scale_down_unneeded_time"),
                "scale_down_delay_after_add_minute": spec.get("ca_scale_down_delay_after_add"),
            },
            "description": spec.get("description"),
            "endpoint_model_list": listed,
            "created_datetime": stage.created_at,
            "updated_datetime": stage.updated_at,
        }
    )


def _endpoint_view(session: Session, row: rows.Endpoint) -> Endpoint:
    stages = session.scalars(
        select(rows.EndpointStage)
        .where(rows.EndpointStage.endpoint_id == row.id)
        .order_by(rows.EndpointStage.created_at, rows.EndpointStage.id)
    ).all()
    views = [_stage_view(session, stage) for stage in stages]
    return Endpoint.model_validate(
        {
            "endpoint_id": row.id,
            "endpoint_name": row.name,
            "description": row.description,
            "endpoint_status_code": row.status,
            "status_reason": row.status_reason,
            "default_stage": next((v for v in views if v.is_default_stage), None),
            "endpoint_stage_list": views,
            "app_key": row.appkey,
            "created_datetime": row.created_at,
            "updated_datetime": row.updated_at,
        }
    )


# -- the user's side -----------------------------------------------------------------------


class EndpointService:
    def __init__(self, session: Session, appkey: str) -> None:
        self.session = session
        self.appkey = appkey

    def create(self, body: EndpointCreate) -> tuple[Endpoint, str]:
        """The endpoint with its default stage; and the stage's id, to deploy after commit."""
        endpoint = rows.Endpoint(
            id=str(uuid.uuid4()),
            appkey=self.appkey,
            name=body.endpoint_name,
            description=body.description,
            parent_pipeline_run_id=body.parent_pipeline_run_id,
            status=str(states.ENDPOINT.initial),
        )
        self.session.add(endpoint)
        try:
            self.session.flush()
        except IntegrityError:
            raise DuplicateNameError(
                f"an endpoint named {body.endpoint_name} already exists"
            ) from None
        stage = self._new_stage(endpoint.id, DEFAULT_STAGE, body, default=True)
        return _endpoint_view(self.session, endpoint), stage.id

    def add_stage(self, body: StageCreate) -> EndpointStage:
        endpoint = self._endpoint(body.endpoint_id)
        if endpoint.status != str(EP.ACTIVE):
            raise DependentResourceError(
                f"endpoint {endpoint.name} is {endpoint.status}; add a stage when it is ACTIVE"
            )
        return _stage_view(self.session, self._new_stage(endpoint.id, body.apigw_stage_name, body))

    def get(self, endpoint_id: str) -> Endpoint:
        return _endpoint_view(self.session, self._endpoint(endpoint_id))

    def find(self, query: EndpointQuery) -> tuple[list[Endpoint], Paging]:
        model = rows.Endpoint
        stmt = select(model).where(model.appkey == self.appkey)
        if query.endpoint_id_list:
            stmt = stmt.where(model.id.in_(query.endpoint_id_list))
        if query.endpoint_name_list:
            stmt = stmt.where(model.name.in_(query.endpoint_name_list))
        stmt = stmt.order_by(model.created_at.desc(), model.id)
        found, total = page(self.session, stmt, query.page, query.limit)
        paging = Paging(page=query.page, limit=query.limit, total_count=total)
        return [_endpoint_view(self.session, row) for row in found], paging

    def stages(self, query: StageQuery) -> tuple[list[EndpointStage], Paging]:
        model = rows.EndpointStage
        stmt = select(model).where(model.appkey == self.appkey)
        if query.endpoint_id:
            stmt = stmt.where(model.endpoint_id == query.endpoint_id)
        stmt = stmt.order_by(model.created_at, model.id)
        found, total = page(self.session, stmt, query.page, query.limit)
        paging = Paging(page=query.page, limit=query.limit, total_count=total)
        return [_stage_view(self.session, row) for row in found], paging

    def stage(self, stage_id: str) -> EndpointStage:
        return _stage_view(self.session, self._stage(stage_id))

    def endpoint_models(self, query: EndpointModelQuery) -> tuple[list[EndpointModel], Paging]:
        stmt = (
            select(rows.EndpointModel, rows.Model, rows.EndpointStage)
            .join(rows.Model, rows.Model.id == rows.EndpointModel.model_id)
            .join(rows.EndpointStage, rows.EndpointStage.id == rows.EndpointModel.stage_id)
            .where(rows.EndpointModel.appkey == self.appkey)
        )
        if query.endpoint_stage_id:
            stmt = stmt.where(rows.EndpointModel.stage_id == query.endpoint_stage_id)
        stmt = stmt.order_by(rows.EndpointModel.created_at, rows.EndpointModel.id)
        found, total = page(
            self.session,
            stmt,  # type: ignore[arg-type]  # three entities: page() takes any Select
            query.page,
            query.limit,
            entities=False,
        )
        paging = Paging(page=query.page, limit=query.limit, total_count=total)
        return [_endpoint_model_view(r[0], r[1], r[2]) for r in found], paging

    def endpoint_model(self, endpoint_model_id: str) -> EndpointModel:
        row = get_owned(
            self.session, rows.EndpointModel, self.appkey, endpoint_model_id, "endpoint model"
        )
        model = self.session.get(rows.Model, row.model_id)
        stage = self.session.get(rows.EndpointStage, row.stage_id)
        assert model is not None and stage is not None
        return _endpoint_model_view(row, model, stage)

    def change_default(self, endpoint_id: str, stage_id: str) -> tuple[Endpoint, str]:
        """Make an ACTIVE stage the default: it serves at the endpoint's URL, and the old
        default stage goes (its pods are torn down after a grace, once the gateway has the
        new routes); the endpoint view and the old stage's id."""
        endpoint = self._endpoint(endpoint_id)
        stage = self._stage(stage_id)
        if stage.endpoint_id != endpoint.id:
            raise _invalid(
                "endpointStageId",
                "endpoint",
                f"stage {stage.name} is not a stage of this endpoint",
            )
        if stage.is_default:
            raise DependentResourceError(f"stage {stage.name} is already the default stage")
        if stage.status != str(ES.ACTIVE):
            raise DependentResourceError(
                f"stage {stage.name} is {stage.status}; a default stage must be ACTIVE"
            )
        if endpoint.status != str(EP.ACTIVE):
            raise DependentResourceError(
                f"endpoint {endpoint.name} is {endpoint.status}; change its default when ACTIVE"
            )
        old = self.session.scalars(
            select(rows.EndpointStage).where(
                rows.EndpointStage.endpoint_id == endpoint.id, rows.EndpointStage.is_default
            )
        ).one()
        for step in (EP.UPDATE_IN_PROGRESS, EP.ACTIVE):  # nothing to wait for: it serves
            states.transition(states.ENDPOINT, endpoint.status, step)
            endpoint.status = str(step)
        endpoint.updated_at = utc_now()
        self.session.delete(old)
        self.session.flush()
        stage.is_default = True
        stage.updated_at = utc_now()
        self.session.flush()
        return _endpoint_view(self.session, endpoint), old.id

    def delete_stage(self, stage_id: str) -> str:
        """Delete a stage that is not the default; its key, to tear its pods down."""
        stage = self._stage(stage_id)
        if stage.is_default:
            raise DependentResourceError(
                f"stage {stage.name} is the endpoint's default stage; make another stage the "
                "default first, or delete the endpoint"
            )
        self._check_settled(stage)
        self.session.delete(stage)
        return stage.id

    def delete(self, endpoint_id: str) -> list[str]:
        """Delete an endpoint whose default stage is all that is left; the stage keys."""
        endpoint = self._endpoint(endpoint_id)
        stages = self.session.scalars(
            select(rows.EndpointStage).where(rows.EndpointStage.endpoint_id == endpoint.id)
        ).all()
        others = [s.name for s in stages if not s.is_default]
        if others:
            raise DependentResourceError(
                f"endpoint {endpoint.name} still has stage(s) {', '.join(sorted(others))}; "
                "delete them first"
            )
        for stage in stages:
            self._check_settled(stage)
        self.session.delete(endpoint)
        return [stage.id for stage in stages]

    # -- helpers -------------------------------------------------------------------------

    def _endpoint(self, endpoint_id: str) -> rows.Endpoint:
        return get_owned(self.session, rows.Endpoint, self.appkey, endpoint_id, "endpoint")

    def _stage(self, stage_id: str) -> rows.EndpointStage:
        return get_owned(self.session, rows.EndpointStage, self.appkey, stage_id, "endpoint stage")

    @staticmethod
    def _check_settled(stage: rows.EndpointStage) -> None:
        if stage.status in (str(ES.CREATE_REQUESTED), str(ES.CREATE_IN_PROGRESS)):
            raise DependentResourceError(
                f"stage {stage.name} is {stage.status}; delete it when it is ACTIVE or failed"
            )

    def _new_stage(
        self, endpoint_id: str, name: str, body: StageSpec, *, default: bool = False
    ) -> rows.EndpointStage:
        flavor = self._flavor(body.flavor_id)
        resources = self._resources(body, flavor)
        spec = body.model_dump(
            mode="json", exclude={"endpoint_model_resource_list", "flavor_id", "endpoint_id"}
        )
        spec["flavor"] = flavor.model_dump(mode="json", by_alias=True)
        stage = rows.EndpointStage(
            id=str(uuid.uuid4()),
            appkey=self.appkey,
            endpoint_id=endpoint_id,
            name=name,
            is_default=default,
            spec=spec,
            status=str(states.ENDPOINT_STAGE.initial),
        )
        self.session.add(stage)
        try:
            self.session.flush()
        except IntegrityError:
            raise DuplicateNameError(f"this endpoint already has a stage named {name}") from None
        for model_id, resource in resources:
            self.session.add(
                rows.EndpointModel(
                    id=str(uuid.uuid4()),
                    appkey=self.appkey,
                    endpoint_id=endpoint_id,
                    stage_id=stage.id,
                    model_id=model_id,
                    status=str(states.STAGE_RESOURCE.initial),
                    spec=resource,
                )
            )
        self.session.flush()
        return stage

    @staticmethod
    def _flavor(flavor_id: str) -> Flavor:
        try:
            return get_catalog().flavor(flavor_id)
        except NotFoundError as exc:
            raise _invalid("flavorId", "unknown", exc.message) from None

    def _resources(self, body: StageSpec, flavor: Flavor) -> list[tuple[str, dict[str, Any]]]:
        """Each model ACTIVE, owned and once; each pod within the flavor; all pods within
        the stage's nodes."""
        found: list[tuple[str, dict[str, Any]]] = []
        cores_needed = 0.0
        for index, item in enumerate(body.endpoint_model_resource_list):
            field = f"endpointModelResourceList.{index}"
            model = self.session.scalar(
                select(rows.Model).where(
                    rows.Model.id == item.model_id, rows.Model.appkey == self.appkey
                )
            )
            if model is None:
                raise _invalid(f"{field}.modelId", "unknown", f"no model {item.model_id[:64]}")
            if model.status != str(states.ModelStatus.ACTIVE):
                raise _invalid(
                    f"{field}.modelId",
                    "status",
                    f"model {model.name} is {model.status}, not ACTIVE",
                )
            if any(model_id == model.id for model_id, _ in found):
                raise _invalid(f"{field}.modelId", "unique", f"model {model.name} is listed twice")
            detail = item.resource_option_detail
            cores = cpu_cores(detail.cpu) if detail and detail.cpu else float(flavor.vcpus)
            memory = (
                memory_bytes(detail.memory) if detail and detail.memory else flavor.ram * 2**20
            )
            gpus = int(detail.gpu) if detail and detail.gpu else 0
            if cores > flavor.vcpus:
                raise _invalid(
                    f"{field}.resourceOptionDetail.cpu",
                    "flavor",
                    f"{cores:g} cores is more than flavor {flavor.name} has ({flavor.vcpus})",
                )
            if memory > flavor.ram * 2**20:
                raise _invalid(
                    f"{field}.resourceOptionDetail.memory",
                    "flavor",
                    f"more memory than flavor {flavor.name} has ({flavor.ram} MiB)",
                )
            if gpus > flavor.gpu_count:
                raise _invalid(
                    f"{field}.resourceOptionDetail.gpu",
                    "flavor",
                    f"{gpus} GPU(s) is more than flavor {flavor.name} has ({flavor.gpu_count})",
                )
            cores_needed += cores * item.pod_count
            found.append(
                (
                    model.id,
                    {
                        "podCount": item.pod_count,
                        "cpus": cores,
                        "memoryBytes": memory,
                        "gpus": gpus,
                        "resourceOptionDetail": detail.model_dump(mode="json", by_alias=True)
                        if detail
                        else None,
                        "podAutoScaleEnable": item.pod_auto_scale_enable,
                        "scaleMetricCode": item.scale_metric_code,
                        "scaleMetricTarget": item.scale_metric_target,
                        "maxPodCount": item.autoscale_bounds()[1],
                        "apigwResourceUri": item.apigw_resource_uri,
                    },
                )
            )
        names = set(
            self.session.scalars(
                select(rows.Model.name).where(rows.Model.id.in_([m for m, _ in found]))
            )
        )
        for index, item in enumerate(body.endpoint_model_resource_list):
            path = item.apigw_resource_uri
            if path is None:
                continue
            first = path.split("/")[1]
            if first in RESERVED_SEGMENTS or first in names:
                raise _invalid(
                    f"endpointModelResourceList.{index}.apigwResourceUri",
                    "reserved",
                    f"{path[:200]} starts like the serving routes (v1, v2, openai or a model's "
                    "name); choose another path",
                )
        if cores_needed > flavor.vcpus * body.node_count:
            raise _invalid(
                "endpointModelResourceList",
                "capacity",
                f"the pods need {cores_needed:g} cores; {body.node_count} node(s) of flavor "
                f"{flavor.name} have {flavor.vcpus * body.node_count}",
            )
        return found


# -- the deployer's side ---------------------------------------------------------------------


def log_prefix(appkey: str, stage_id: str) -> str:
    """Where a stage's pods, controller and gateway records write (category
    ``easymaker.inference``)."""
    return joblogs.log_prefix(LOG_KIND, appkey, stage_id)


def _nodes(spec: dict[str, Any]) -> dict[str, Any]:
    """A stage's nodes as ``serving.nodescale`` asks them of Ray's autoscaler."""
    flavor = spec.get("flavor") or {}
    count = int(spec.get("node_count") or 1)
    autoscale = None
    if spec.get("ca_enable"):
        autoscale = {
            "minNodes": spec.get("ca_min_node_count") or count,
            "maxNodes": spec.get("ca_max_node_count") or count,
            "scaleDown": bool(spec.get("ca_scale_down_enable")),
            "utilThreshold": spec.get("ca_scale_down_util_thresh"),
            "unneededMinutes": spec.get("ca_scale_down_unneeded_time"),
            "delayAfterAddMinutes": spec.get("ca_scale_down_delay_after_add"),
        }
    return {
        "count": count,
        "flavor": {
            "cpus": float(flavor.get("vcpus") or 1),
            "memoryBytes": float(flavor.get("ram") or 1024) * 2**20,
            "gpus": float(flavor.get("gpuCount") or 0),
        },
        "autoscale": autoscale,
    }


def _autoscale(spec: dict[str, Any]) -> dict[str, Any] | None:
    """A stage resource's pod autoscaler, as ``serving.controller`` takes it."""
    if not spec.get("podAutoScaleEnable"):
        return None
    pods = int(spec.get("podCount", 1))
    return {
        "metric": spec["scaleMetricCode"],
        "target": spec["scaleMetricTarget"],
        "minPods": pods,
        "maxPods": int(spec.get("maxPodCount") or pods),
    }


def deployment(session: Session, stage_id: str) -> dict[str, Any]:
    """What ``serving.deploy`` starts for a stage (credentials decrypted for the runtime)."""
    stage = session.get(rows.EndpointStage, stage_id)
    if stage is None:
        raise NotFoundError(f"endpoint stage {stage_id[:64]} not found")
    pairs = session.execute(
        select(rows.EndpointModel, rows.Model)
        .join(rows.Model, rows.Model.id == rows.EndpointModel.model_id)
        .where(rows.EndpointModel.stage_id == stage.id)
        .order_by(rows.EndpointModel.created_at, rows.EndpointModel.id)
    ).all()
    return {
        "stage": stage.id,
        "status": stage.status,
        "nodes": _nodes(stage.spec or {}),
        "models": [
            {
                "name": model.name,
                "framework": model.format_code,
                "artifactUri": model.upload_uri,
                "pods": resource.spec.get("podCount", 1),
                "cpus": resource.spec.get("cpus", 1.0),
                "memoryBytes": resource.spec.get("memoryBytes", 2 * 2**30),
                "gpus": resource.spec.get("gpus", 0),
                "parameters": models.runtime_parameters(model),
                "autoscale": _autoscale(resource.spec),
                "logPrefix": log_prefix(stage.appkey, stage.id),
            }
            for resource, model in pairs
        ],
    }


def report(
    session: Session,
    stage_id: str,
    status: str,
    reason: str | None,
    routes: dict[str, list[str]] | None,
) -> str:
    """The deployer's report: the stage walks to ``status``; its models' pods and statuses
    follow, and the endpoint follows its default stage."""
    stage = session.get(rows.EndpointStage, stage_id)
    if stage is None:
        raise NotFoundError(f"endpoint stage {stage_id[:64]} not found")
    target = states.ENDPOINT_STAGE.parse(status)
    if target is None:
        raise _invalid("status", "enum", f"{status[:64]} is not a stage status")
    if stage.status != str(target):
        for step in states.path(states.ENDPOINT_STAGE, stage.status, target):
            states.transition(states.ENDPOINT_STAGE, stage.status, step)
            stage.status = str(step)
    stage.status_reason = reason
    stage.deploy_status = {
        ES.ACTIVE: "ACTIVE",
        ES.CREATE_FAILED: "STAGE_DEPLOY_FAIL",
        ES.DEPLOY_FAILED: "STAGE_DEPLOY_FAIL",
    }.get(target, "STAGE_DEPLOYING")
    stage.updated_at = utc_now()
    resources = session.scalars(
        select(rows.EndpointModel).where(rows.EndpointModel.stage_id == stage.id)
    ).all()
    names = {
        m.id: m.name
        for m in session.scalars(
            select(rows.Model).where(rows.Model.id.in_([r.model_id for r in resources]))
        )
    }
    resource_status = {ES.ACTIVE: R.ACTIVE, ES.CREATE_FAILED: R.CREATE_FAILED}.get(
        target, R.CREATE_IN_PROGRESS
    )
    redeploying = target in (ES.DEPLOY_IN_PROGRESS, ES.DEPLOY_FAILED)
    for resource in resources:
        if not redeploying and resource.status != str(resource_status):
            for resource_step in states.path(
                states.STAGE_RESOURCE, resource.status, resource_status
            ):
                resource.status = str(resource_step)
        resource.pods = list((routes or {}).get(names[resource.model_id], []))
        resource.updated_at = utc_now()
    if stage.is_default:
        endpoint = session.get(rows.Endpoint, stage.endpoint_id)
        ends = {ES.ACTIVE: EP.ACTIVE, ES.CREATE_FAILED: EP.CREATE_FAILED}
        if endpoint is not None and target in ends and endpoint.status != str(ends[target]):
            for endpoint_step in states.path(states.ENDPOINT, endpoint.status, ends[target]):
                endpoint.status = str(endpoint_step)
            endpoint.status_reason = reason
            endpoint.updated_at = utc_now()
    return stage.status


def gateway_routes(session: Session) -> dict[str, Any]:
    """Every ACTIVE stage's models and pods, under the stage's id and, for a default stage,
    under its endpoint's id too: the gateway's table."""
    found = session.execute(
        select(
            rows.EndpointStage.id,
            rows.EndpointStage.endpoint_id,
            rows.EndpointStage.appkey,
            rows.EndpointStage.is_default,
            rows.EndpointStage.spec,
            rows.Model.name,
            rows.Model.format_code,
            rows.Model.parameters,
            rows.EndpointModel.spec,
            rows.EndpointModel.pods,
        )
        .join(rows.EndpointModel, rows.EndpointModel.stage_id == rows.EndpointStage.id)
        .join(rows.Model, rows.Model.id == rows.EndpointModel.model_id)
        # a stage being deployed again keeps its URL: 503 (no ready pod) until it is back
        .where(rows.EndpointStage.status.in_((str(ES.ACTIVE), str(ES.DEPLOY_IN_PROGRESS))))
    ).all()
    stages: dict[str, Any] = {}
    for stage_id, endpoint_id, appkey, is_default, spec, model, fmt, params, res, pods in found:
        named = [(str(p["parameterName"]), str(p["parameterValue"])) for p in params or []]
        entry: Any = list(pods or [])
        if served_by_vllm(fmt, named, float((res or {}).get("gpus", 0))):
            entry = {"backends": entry, **serving_paths(vllm=True)}
        if (res or {}).get("apigwResourceUri"):
            entry = entry if isinstance(entry, dict) else {"backends": entry}
            entry["resourcePath"] = res["apigwResourceUri"]
        keys = [stage_id, endpoint_id] if is_default else [stage_id]
        meta = {  # whose calls the gateway counts, and where it logs them (useLog)
            "stageId": stage_id,
            "endpointId": endpoint_id,
            "logPrefix": log_prefix(appkey, stage_id) if (spec or {}).get("use_log") else None,
        }
        for key in keys:
            stages.setdefault(key, {"models": {}, **meta})["models"][model] = entry
    return {"stages": stages}


# -- dispatch ----------------------------------------------------------------------------------


def _submit(submission_id: str, entrypoint: str) -> None:
    get_backend().submit(
        JobSubmission(
            submission_id=submission_id,
            entrypoint=entrypoint,
            env_vars=jobs.runner_env(),
            metadata={"kind": RUNNER_KIND},
        )
    )


def dispatch(database: Database, stage_id: str) -> None:
    """Submit the stage's deploy job (its id is the submission's: a retry starts none)."""
    python = get_settings().runner_python
    try:
        _submit(f"deploy-{stage_id}", f"{python} -m serving.deploy stage {stage_id}")
    except BackendUnavailableError as exc:
        logger.warning("stage deploy not dispatched", extra={"stageId": stage_id, "why": str(exc)})
        return
    with database.session() as session:
        stage = session.get(rows.EndpointStage, stage_id)
        if stage is not None and stage.dispatched_at is None:
            stage.dispatched_at = utc_now()


def deploy_submission(stage: rows.EndpointStage) -> str:
    """The Ray submission id of the stage's latest deploy job."""
    return str((stage.spec or {}).get("deploySubmission") or f"deploy-{stage.id}")


def redeploy(database: Database, stage_id: str, reason: str) -> bool:
    """Deploy an ACTIVE stage again (DEPLOY_IN_PROGRESS) whose pods are gone, under a new
    deploy job; whether this call moved it (a concurrent tick's move wins)."""
    submission = f"deploy-{stage_id}-{uuid.uuid4().hex[:8]}"
    states.transition(states.ENDPOINT_STAGE, ES.ACTIVE, ES.DEPLOY_IN_PROGRESS)
    table = rows.EndpointStage
    with database.session() as session:
        stage = session.get(table, stage_id)
        if stage is None or stage.status != str(ES.ACTIVE):
            return False
        moved = session.execute(  # compare-and-set: of two ticks, one moves it
            update(table)
            .where(table.id == stage_id, table.status == str(ES.ACTIVE))
            .values(
                status=str(ES.DEPLOY_IN_PROGRESS),
                status_reason=reason[:4000],
                deploy_status="STAGE_DEPLOYING",
                spec={**(stage.spec or {}), "deploySubmission": submission},
                dispatched_at=utc_now(),
                updated_at=utc_now(),
                version=table.version + 1,
            )
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            return False
        for resource in session.scalars(
            select(rows.EndpointModel).where(rows.EndpointModel.stage_id == stage_id)
        ):
            resource.pods = []  # the gateway answers 503 until the pods are back
    logger.warning("stage redeployed", extra={"stageId": stage_id, "why": reason})
    python = get_settings().runner_python
    try:
        _submit(submission, f"{python} -m serving.deploy stage {stage_id}")
    except BackendUnavailableError as exc:  # the lost-job check below fails it later
        logger.warning(
            "stage redeploy not dispatched", extra={"stageId": stage_id, "why": str(exc)}
        )
    return True


def teardown(stage_ids: list[str], grace: float = 0.0) -> None:
    """Submit the jobs that end these stages' pods (after ``grace`` seconds: requests the
    gateway still sends them finish first)."""
    python = get_settings().runner_python
    for stage_id in stage_ids:
        try:
            _submit(
                f"teardown-{stage_id}-{uuid.uuid4().hex[:8]}",
                f"{python} -m serving.deploy teardown --stage {stage_id} --grace {grace:g}",
            )
        except BackendUnavailableError as exc:
            logger.warning(
                "stage teardown not dispatched", extra={"stageId": stage_id, "why": str(exc)}
            )


def reconcile(database: Database) -> None:
    """Dispatch the stages whose deploy never went out (the after-commit call died), and
    fail those whose deploy job ended, or was lost, without reporting (its driver was
    killed): CREATE_FAILED with what Ray says, so no stage waits for ever."""
    cutoff = utc_now() - DISPATCH_GRACE
    with database.session(read_only=True) as session:
        waiting = session.scalars(
            select(rows.EndpointStage.id).where(
                rows.EndpointStage.status == str(ES.CREATE_REQUESTED),
                rows.EndpointStage.dispatched_at.is_(None),
                rows.EndpointStage.created_at < cutoff,
            )
        ).all()
        deploying = [
            (stage.id, deploy_submission(stage), stage.status)
            for stage in session.scalars(
                select(rows.EndpointStage).where(
                    rows.EndpointStage.status.in_(DEPLOYING),
                    rows.EndpointStage.dispatched_at.is_not(None),
                )
            )
        ]
        settled = session.scalars(
            select(rows.EndpointStage.id).where(
                rows.EndpointStage.status == str(ES.ACTIVE),
                rows.EndpointStage.updated_at < utc_now() - LOST_PODS_GRACE,
            )
        ).all()
    for stage_id in waiting:
        dispatch(database, stage_id)
    backend = get_backend()
    for stage_id, submission, status in deploying:
        try:
            info = backend.info(submission)
        except BackendUnavailableError:
            return  # Ray is away: asked again at the next tick
        if info is None:
            reason = "its deploy job is gone from Ray (the cluster restarted?)"
        elif info.status.is_terminal:
            said = f": {info.message}" if info.message else ""
            reason = f"its deploy job ended {info.status.value} without a report{said}"
        else:
            continue
        failed = ES.DEPLOY_FAILED if status == str(ES.DEPLOY_IN_PROGRESS) else ES.CREATE_FAILED
        with database.session() as session:
            stage = session.get(rows.EndpointStage, stage_id)
            if stage is not None and stage.status == status:
                report(session, stage_id, str(failed), reason[:4000], None)
    if settled:
        _redeploy_lost(database, backend, list(settled))


def _redeploy_lost(database: Database, backend: Any, stage_ids: list[str]) -> None:
    """An ACTIVE stage whose controller is gone from Ray (the cluster restarted, or its node
    died with every pod) is deployed again; a stage whose controller lives looks after its
    own pods."""
    try:
        alive = backend.actors(SERVING_NAMESPACE)
    except BackendUnavailableError:
        return
    for stage_id in stage_ids:
        if f"{stage_id}.controller" not in alive:
            redeploy(database, stage_id, "its pods were gone from Ray; deployed again")


# -- API statistics ----------------------------------------------------------------------------

STATS_MAX_WINDOW = timedelta(days=31)
STATS_DEFAULT_WINDOW = timedelta(hours=1)


def record_stats(session: Session, stats: list[GatewayStat]) -> int:
    """Add the gateway's minutes to the stored ones (a stage gone meanwhile is skipped); how
    many minutes were taken."""
    taken = 0
    for item in stats:
        stage = session.get(rows.EndpointStage, item.endpoint_stage_id)
        if stage is None:
            continue
        minute = datetime.fromtimestamp(item.minute - item.minute % 60, UTC).replace(tzinfo=None)
        row = session.get(rows.EndpointStageStat, (stage.id, minute))
        if row is None:
            row = rows.EndpointStageStat(
                stage_id=stage.id,
                minute=minute,
                appkey=stage.appkey,
                endpoint_id=stage.endpoint_id,
                calls=0,
                status_2xx=0,
                status_4xx=0,
                status_5xx=0,
                latency_buckets=[],
            )
            session.add(row)
        row.calls += item.calls
        row.status_2xx += item.status2xx
        row.status_4xx += item.status4xx
        row.status_5xx += item.status5xx
        row.latency_buckets = add_buckets(row.latency_buckets, item.buckets)
        taken += 1
    return taken


def _point(
    time: datetime | None, calls: int, by_class: tuple[int, int, int], buckets: list[int]
) -> ApiStatisticsPoint:
    return ApiStatisticsPoint(
        time=time,
        calls=calls,
        status2xx=by_class[0],
        status4xx=by_class[1],
        status5xx=by_class[2],
        latency_p50_ms=percentile(buckets, 0.5),
        latency_p90_ms=percentile(buckets, 0.9),
        latency_p99_ms=percentile(buckets, 0.99),
    )


def api_statistics(
    session: Session, appkey: str, stage_id: str, query: ApiStatisticsQuery
) -> ApiStatistics:
    """A stage's calls per minute in the window, and their total."""
    stage = get_owned(session, rows.EndpointStage, appkey, stage_id, "endpoint stage")
    end = _naive(query.end_time) or utc_now()
    start = _naive(query.start_time) or end - STATS_DEFAULT_WINDOW
    if start >= end:
        raise _invalid("startTime", "order", "startTime must be before endTime")
    if end - start > STATS_MAX_WINDOW:
        raise _invalid("startTime", "window", "at most 31 days between startTime and endTime")
    found = session.scalars(
        select(rows.EndpointStageStat)
        .where(
            rows.EndpointStageStat.stage_id == stage.id,
            rows.EndpointStageStat.minute >= start.replace(second=0, microsecond=0),
            rows.EndpointStageStat.minute < end,
        )
        .order_by(rows.EndpointStageStat.minute)
    ).all()
    series = [
        _point(
            row.minute,
            row.calls,
            (row.status_2xx, row.status_4xx, row.status_5xx),
            list(row.latency_buckets),
        )
        for row in found
    ]
    buckets: list[int] = []
    for row in found:
        buckets = add_buckets(buckets, row.latency_buckets)
    total = _point(
        None,
        sum(r.calls for r in found),
        (
            sum(r.status_2xx for r in found),
            sum(r.status_4xx for r in found),
            sum(r.status_5xx for r in found),
        ),
        buckets,
    )
    return ApiStatistics(
        endpoint_id=stage.endpoint_id,
        endpoint_stage_id=stage.id,
        start_time=start,
        end_time=end,
        total=total,
        series=series,
    )


def _naive(value: datetime | None) -> datetime | None:
    """A wire time as stored: naive UTC."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)
