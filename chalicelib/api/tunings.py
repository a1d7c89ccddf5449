"""/hyperparameter-tunings routes, and the internal routes the tuning driver reports through."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from chalicelib.api.envelope import ListResult, RequestContext, ResourceApi
from chalicelib.dispatch import get_backend
from chalicelib.domain.common import WireModel
from chalicelib.domain.monitoring import MetricReport, Monitoring, MonitoringQuery
from chalicelib.domain.tuning import (
    HyperparameterTuning,
    HyperparameterTuningCopy,
    HyperparameterTuningCreateBody,
    HyperparameterTuningQuery,
    Trial,
    TrialQuery,
)
from chalicelib.services import monitoring, runner_auth, tunings
from chalicelib.services.tunings import TuningService
from chalicelib.store.db import get_database

api = ResourceApi(__name__, "hyperparameter-tunings")
ONE = "/hyperparameter-tunings/{hyperparameterTuningId}"
INTERNAL = "/internal/v1/hyperparameter-tunings/{hyperparameterTuningId}"


def _dispatch_after_commit(ctx: RequestContext, tuning_id: str) -> None:
    ctx.after_commit.append(lambda: tunings.dispatch(get_database(), tuning_id))


@api.route(
    "/hyperparameter-tunings",
    "POST",
    summary="Create a hyperparameter tuning (runs its trials on the runner pool)",
    body=HyperparameterTuningCreateBody,
    response_key="hyperparameterTuning",
    response_model=HyperparameterTuning,
    status=201,
)
def create_tuning(
    ctx: RequestContext, body: HyperparameterTuningCreateBody
) -> HyperparameterTuning:
    view, tuning_id = TuningService(ctx.session, ctx.appkey).create(body)
    _dispatch_after_commit(ctx, tuning_id)
    return view


@api.route(
    "/hyperparameter-tunings",
    "GET",
    summary="List hyperparameter tunings",
    query=HyperparameterTuningQuery,
    response_key="hyperparameterTuningList",
    response_model=HyperparameterTuning,
    is_list=True,
)
def list_tunings(ctx: RequestContext, query: HyperparameterTuningQuery) -> ListResult:
    items, paging = TuningService(ctx.session, ctx.appkey).list(query)
    return ListResult(items, paging)


@api.route(
    ONE,
    "GET",
    summary="Get a hyperparameter tuning",
    response_key="hyperparameterTuning",
    response_model=HyperparameterTuning,
)
def get_tuning(ctx: RequestContext, hyperparameter_tuning_id: str) -> HyperparameterTuning:
    return TuningService(ctx.session, ctx.appkey).get(hyperparameter_tuning_id)


@api.route(
    ONE + "/trials",
    "GET",
    summary="The trials of a hyperparameter tuning",
    query=TrialQuery,
    response_key="trialList",
    response_model=Trial,
    is_list=True,
)
def list_trials(
    ctx: RequestContext, hyperparameter_tuning_id: str, query: TrialQuery
) -> ListResult:
    items, paging = TuningService(ctx.session, ctx.appkey).trials(hyperparameter_tuning_id, query)
    return ListResult(list(items), paging)


@api.route(
    ONE + "/stop",
    "PUT",
    summary="Stop a hyperparameter tuning (its running trials are KILLED)",
    response_key="hyperparameterTuning",
    response_model=HyperparameterTuning,
)
def stop_tuning(ctx: RequestContext, hyperparameter_tuning_id: str) -> HyperparameterTuning:
    view, tell_ray = TuningService(ctx.session, ctx.appkey).stop(hyperparameter_tuning_id)
    if tell_ray:
        ctx.after_commit.append(lambda: _stop_job(hyperparameter_tuning_id))
    return view


def _stop_job(tuning_id: str) -> None:
    get_backend().stop(tuning_id)


@api.route(
    ONE + "/copy",
    "POST",
    summary="Copy a hyperparameter tuning (a new one with the same settings, started now)",
    body=HyperparameterTuningCopy,
    response_key="hyperparameterTuning",
    response_model=HyperparameterTuning,
    status=201,
)
def copy_tuning(
    ctx: RequestContext, hyperparameter_tuning_id: str, body: HyperparameterTuningCopy
) -> HyperparameterTuning:
    service = TuningService(ctx.session, ctx.appkey)
    view, new_id = service.copy(hyperparameter_tuning_id, body.hyperparameter_tuning_name)
    _dispatch_after_commit(ctx, new_id)
    return view


@api.route(ONE, "DELETE", summary="Delete an ended hyperparameter tuning (and its Optuna study)")
def delete_tuning(ctx: RequestContext, hyperparameter_tuning_id: str) -> None:
    TuningService(ctx.session, ctx.appkey).delete(hyperparameter_tuning_id)
    ctx.after_commit.append(lambda: tunings.forget_study(hyperparameter_tuning_id))


@api.route(
    ONE + "/monitoring",
    "GET",
    summary="CPU, memory and GPU of a tuning's trial nodes over time (for charts)",
    query=MonitoringQuery,
    response_key="monitoring",
    response_model=Monitoring,
)
def tuning_monitoring(
    ctx: RequestContext, hyperparameter_tuning_id: str, query: MonitoringQuery
) -> Monitoring:
    return TuningService(ctx.session, ctx.appkey).monitoring(hyperparameter_tuning_id, query)


# -- the driver's side (signed with the job's runner token) --------------------------------


class TuningReport(WireModel):
    status: str
    reason: str | None = None
    detail: str | None = None


class TuningStatus(WireModel):
    status: str


class TrialReport(WireModel):
    number: Annotated[int, Field(ge=0, le=1_000_000)]
    params: dict[str, Any] = {}
    status: str = "CREATED"
    reason: str | None = None
    metrics: dict[str, Any] | None = None
    objective_value: float | None = None


def _verify(ctx: RequestContext, tuning_id: str) -> None:
    presented = ctx.request.headers.get(runner_auth.HEADER)
    runner_auth.verify(tunings.RUNNER_KIND, tuning_id, presented)


@api.route(
    INTERNAL + "/job",
    "GET",
    summary="(runner) the job specification of a tuning",
    response_key="job",
    authenticated=False,
    prefixed=False,
)
def tuning_runner_job(ctx: RequestContext, hyperparameter_tuning_id: str) -> dict[str, Any]:
    _verify(ctx, hyperparameter_tuning_id)
    return tunings.job_spec(ctx.session, hyperparameter_tuning_id)


@api.route(
    INTERNAL + "/status",
    "POST",
    summary="(runner) report where a tuning is",
    body=TuningReport,
    response_key="hyperparameterTuning",
    response_model=TuningStatus,
    authenticated=False,
    prefixed=False,
)
def tuning_runner_report(
    ctx: RequestContext, hyperparameter_tuning_id: str, body: TuningReport
) -> TuningStatus:
    _verify(ctx, hyperparameter_tuning_id)
    status = tunings.report(
        ctx.session, hyperparameter_tuning_id, body.status, body.reason, body.detail
    )
    return TuningStatus(status=status)


@api.route(
    INTERNAL + "/trials",
    "POST",
    summary="(runner) create or move a trial",
    body=TrialReport,
    response_key="trial",
    authenticated=False,
    prefixed=False,
)
def tuning_runner_trial(
    ctx: RequestContext, hyperparameter_tuning_id: str, body: TrialReport
) -> dict[str, Any]:
    _verify(ctx, hyperparameter_tuning_id)
    payload = body.model_dump(mode="json", by_alias=True)
    return tunings.upsert_trial(ctx.session, hyperparameter_tuning_id, payload)


@api.route(
    INTERNAL + "/metrics",
    "POST",
    summary="(runner) monitoring samples of a tuning's trials",
    body=MetricReport,
    response_key="recorded",
    authenticated=False,
    prefixed=False,
)
def tuning_runner_metrics(
    ctx: RequestContext, hyperparameter_tuning_id: str, body: MetricReport
) -> int:
    _verify(ctx, hyperparameter_tuning_id)
    return monitoring.record(ctx.session, tunings.KIND, hyperparameter_tuning_id, body.samples)
