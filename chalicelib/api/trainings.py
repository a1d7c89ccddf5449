"""/trainings routes, and the internal routes the training driver reports through."""

from __future__ import annotations

from typing import Any, Literal

from chalicelib.api.envelope import ListResult, RequestContext, ResourceApi
from chalicelib.dispatch import get_backend
from chalicelib.domain.common import WireModel
from chalicelib.domain.monitoring import MetricReport, Monitoring, MonitoringQuery
from chalicelib.domain.training import (
    Training,
    TrainingCopy,
    TrainingCreate,
    TrainingQuery,
)
from chalicelib.services import monitoring, runner_auth, trainings
from chalicelib.services.trainings import TrainingService
from chalicelib.store.db import get_database

api = ResourceApi(__name__, "trainings")
ONE = "/trainings/{trainingId}"


def _dispatch_after_commit(ctx: RequestContext, training_id: str) -> None:
    ctx.after_commit.append(lambda: trainings.dispatch(get_database(), training_id))


@api.route(
    "/trainings",
    "POST",
    summary="Create a training (runs it on the runner pool)",
    body=TrainingCreate,
    response_key="training",
    response_model=Training,
    status=201,
)
def create_training(ctx: RequestContext, body: TrainingCreate) -> Training:
    view, training_id = TrainingService(ctx.session, ctx.appkey).create(body)
    _dispatch_after_commit(ctx, training_id)
    return view


@api.route(
    "/trainings",
    "GET",
    summary="List trainings",
    query=TrainingQuery,
    response_key="trainingList",
    response_model=Training,
    is_list=True,
)
def list_trainings(ctx: RequestContext, query: TrainingQuery) -> ListResult:
    items, paging = TrainingService(ctx.session, ctx.appkey).list(query)
    return ListResult(items, paging)


@api.route(ONE, "GET", summary="Get a training", response_key="training", response_model=Training)
def get_training(ctx: RequestContext, training_id: str) -> Training:
    return TrainingService(ctx.session, ctx.appkey).get(training_id)


@api.route(
    ONE + "/stop",
    "PUT",
    summary="Stop a training",
    response_key="training",
    response_model=Training,
)
def stop_training(ctx: RequestContext, training_id: str) -> Training:
    view, tell_ray = TrainingService(ctx.session, ctx.appkey).stop(training_id)
    if tell_ray:
        ctx.after_commit.append(lambda: _stop_job(training_id))
    return view


def _stop_job(training_id: str) -> None:
    get_backend().stop(training_id)


@api.route(
    ONE + "/copy",
    "POST",
    summary="Copy a training (a new training with the same settings, started now)",
    body=TrainingCopy,
    response_key="training",
    response_model=Training,
    status=201,
)
def copy_training(ctx: RequestContext, training_id: str, body: TrainingCopy) -> Training:
    view, new_id = TrainingService(ctx.session, ctx.appkey).copy(training_id, body.training_name)
    _dispatch_after_commit(ctx, new_id)
    return view


@api.route(ONE, "DELETE", summary="Delete an ended training")
def delete_training(ctx: RequestContext, training_id: str) -> None:
    TrainingService(ctx.session, ctx.appkey).delete(training_id)


# -- the driver's side (signed with the job's runner token, not a user token) -------------


class RunnerReport(WireModel):
    status: str
    reason: str | None = None


class RunnerJob(WireModel):
    job: dict[str, Any]


class RunnerStatus(WireModel):
    status: str
    kind: Literal["training"] = "training"


@api.route(
    "/internal/v1/trainings/{trainingId}/job",
    "GET",
    summary="(runner) the job specification of a training",
    response_key="job",
    authenticated=False,
    prefixed=False,
)
def runner_job(ctx: RequestContext, training_id: str) -> dict[str, Any]:
    runner_auth.verify("training", training_id, ctx.request.headers.get(runner_auth.HEADER))
    return trainings.job_spec(ctx.session, training_id)


@api.route(
    "/internal/v1/trainings/{trainingId}/status",
    "POST",
    summary="(runner) report where a training is",
    body=RunnerReport,
    response_key="training",
    response_model=RunnerStatus,
    authenticated=False,
    prefixed=False,
)
def runner_report(ctx: RequestContext, training_id: str, body: RunnerReport) -> RunnerStatus:
    runner_auth.verify("training", training_id, ctx.request.headers.get(runner_auth.HEADER))
    status = trainings.report(ctx.session, training_id, body.status, body.reason)
    return RunnerStatus(status=status)


@api.route(
    "/internal/v1/trainings/{trainingId}/metrics",
    "POST",
    summary="(runner) monitoring samples of a training's nodes",
    body=MetricReport,
    response_key="recorded",
    authenticated=False,
    prefixed=False,
)
def runner_metrics(ctx: RequestContext, training_id: str, body: MetricReport) -> int:
    runner_auth.verify("training", training_id, ctx.request.headers.get(runner_auth.HEADER))
    TrainingService.require_exists(ctx.session, training_id)
    return monitoring.record(ctx.session, "training", training_id, body.samples)


@api.route(
    ONE + "/monitoring",
    "GET",
    summary="CPU, memory and GPU of a training's nodes over time (for charts)",
    query=MonitoringQuery,
    response_key="monitoring",
    response_model=Monitoring,
)
def training_monitoring(
    ctx: RequestContext, training_id: str, query: MonitoringQuery
) -> Monitoring:
    view = TrainingService(ctx.session, ctx.appkey).get(training_id)
    nodes = monitoring.series(
        ctx.session, training_id, since=query.since, until=query.until, points=query.points
    )
    return Monitoring(
        resource_id=training_id,
        node_list=nodes,
        zombie=view.zombie,
        zombie_since=view.zombie_since,
    )
