"""Job logs: a training's lines (paged or followed) and a search in the Log & Crash manner."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from chalicelib.api.envelope import ListResult, RequestContext, ResourceApi
from chalicelib.domain import states
from chalicelib.domain.common import Paging, WireModel
from chalicelib.domain.training import LogSearchQuery, TrainingLogQuery
from chalicelib.errors import NotFoundError
from chalicelib.objectstore import platform_store
from chalicelib.services import endpoints, joblogs, trainings, tunings
from chalicelib.services.joblogs import LogRecord
from chalicelib.store import models
from chalicelib.store.db import get_database
from chalicelib.store.repository import get_owned

api = ResourceApi(__name__, "logs")
FOLLOW_POLL_SECONDS = 0.5
INFERENCE = "easymaker.inference"
CATEGORIES = {"easymaker.training": trainings.KIND, INFERENCE: endpoints.LOG_KIND}


class TrainingLog(WireModel):
    log_list: list[LogRecord]
    next_cursor: str | None = None
    training_status_code: str
    paging: Paging | None = None


def _status(appkey: str, training_id: str) -> str:
    with get_database().session(read_only=True) as session:
        row = get_owned(session, models.Training, appkey, training_id, "training")
        return row.status


def _follow(
    prefix: str,
    query: TrainingLogQuery,
    status: Callable[[], str],
    machine: states.StateMachine[Any],
) -> TrainingLog:
    """A page of a job's log, or the lines after ``query.cursor``; ``follow`` waits for new
    lines while the job has not ended (``status`` reads it anew on each round)."""
    store = platform_store()
    current = status()
    if query.page is not None:
        records, total = joblogs.page_logs(
            store, prefix, page=query.page, limit=query.limit, source=query.source
        )
        paging = Paging(page=query.page, limit=query.limit, total_count=total)
        return TrainingLog(log_list=records, training_status_code=current, paging=paging)
    deadline = time.monotonic() + (query.wait_seconds if query.follow else 0)
    while True:
        records, cursor = joblogs.read_logs(
            store, prefix, cursor=query.cursor, limit=query.limit, source=query.source
        )
        ended = states.is_terminal(machine, current)
        if records or ended or time.monotonic() >= deadline:
            return TrainingLog(log_list=records, next_cursor=cursor, training_status_code=current)
        time.sleep(FOLLOW_POLL_SECONDS)
        current = status()


@api.route(
    "/trainings/{trainingId}/logs",
    "GET",
    summary="A training's log lines: a page, or the lines after a cursor (follow waits)",
    query=TrainingLogQuery,
    response_key="trainingLog",
    response_model=TrainingLog,
)
def training_logs(ctx: RequestContext, training_id: str, query: TrainingLogQuery) -> TrainingLog:
    prefix = trainings.log_prefix(ctx.appkey, training_id)
    return _follow(prefix, query, lambda: _status(ctx.appkey, training_id), states.TRAINING)


def _trial_status(appkey: str, tuning_id: str, trial_id: str) -> str:
    with get_database().session(read_only=True) as session:
        get_owned(session, models.HyperparameterTuning, appkey, tuning_id, "hyperparameter tuning")
        trial = session.get(models.Trial, trial_id)
        if trial is None or trial.tuning_id != tuning_id:
            raise NotFoundError(f"trial {trial_id[:64]} not found")
        return trial.status


@api.route(
    "/hyperparameter-tunings/{hyperparameterTuningId}/trials/{trialId}/logs",
    "GET",
    summary="A trial's log lines: a page, or the lines after a cursor (follow waits)",
    query=TrainingLogQuery,
    response_key="trialLog",
    response_model=TrainingLog,
)
def trial_logs(
    ctx: RequestContext, hyperparameter_tuning_id: str, trial_id: str, query: TrainingLogQuery
) -> TrainingLog:
    prefix = tunings.trial_log_prefix(ctx.appkey, trial_id)
    return _follow(
        prefix,
        query,
        lambda: _trial_status(ctx.appkey, hyperparameter_tuning_id, trial_id),
        states.TRIAL,
    )


@api.route(
    "/hyperparameter-tunings/{hyperparameterTuningId}/logs",
    "GET",
    summary="The tuning driver's own log (its decisions: trials created, early-stopped, ...)",
    query=TrainingLogQuery,
    response_key="hyperparameterTuningLog",
    response_model=TrainingLog,
)
def tuning_logs(
    ctx: RequestContext, hyperparameter_tuning_id: str, query: TrainingLogQuery
) -> TrainingLog:
    def status() -> str:
        with get_database().session(read_only=True) as session:
            row = get_owned(
                session,
                models.HyperparameterTuning,
                ctx.appkey,
                hyperparameter_tuning_id,
                "hyperparameter tuning",
            )
            return row.status

    prefix = tunings.log_prefix(ctx.appkey, hyperparameter_tuning_id)
    return _follow(prefix, query, status, states.HYPERPARAMETER_TUNING)


@api.route(
    "/endpoint-stages/{endpointStageId}/logs",
    "GET",
    summary="A stage's log (category easymaker.inference): its pods' lines (source "
    "{model}.{index}) and its pod autoscaler's decisions (source autoscaler)",
    query=TrainingLogQuery,
    response_key="endpointStageLog",
    response_model=TrainingLog,
)
def endpoint_stage_logs(
    ctx: RequestContext, endpoint_stage_id: str, query: TrainingLogQuery
) -> TrainingLog:
    def status() -> str:
        with get_database().session(read_only=True) as session:
            row = get_owned(
                session, models.EndpointStage, ctx.appkey, endpoint_stage_id, "endpoint stage"
            )
            return row.status

    status()  # 404 before anything is read
    prefix = endpoints.log_prefix(ctx.appkey, endpoint_stage_id)
    return _follow(prefix, query, status, states.ENDPOINT_STAGE)


def _logged_resources(appkey: str, kind: str) -> list[str]:
    """Resources whose job was created with ``useLog`` (their log meta object says so)."""
    store = platform_store()
    found: list[str] = []
    base = f"logs-meta/{kind}/{appkey}/"
    for key in store.list(base):
        try:
            meta: dict[str, Any] = json.loads(store.read(key))
        except ValueError:
            continue
        if meta.get("useLog"):
            found.append(key[len(base) :].removesuffix(".json"))
    return found


@api.route(
    "/logs",
    "GET",
    summary="Search logs in the Log & Crash manner: easymaker.training (jobs created with "
    "useLog) or easymaker.inference (endpoint stages created with useLog: one line per call "
    "with its inferenceId, and the pods' and pod autoscaler's lines)",
    query=LogSearchQuery,
    response_key="logList",
    response_model=LogRecord,
    is_list=True,
)
def search_logs(ctx: RequestContext, query: LogSearchQuery) -> ListResult:
    kind = CATEGORIES[query.category]
    stages: dict[str, str] = {}
    if query.category == INFERENCE:
        stages = _logged_stages(ctx.appkey, query.endpoint_id, query.endpoint_stage_id)
        resources = list(stages)
    else:
        resources = _logged_resources(ctx.appkey, kind)
        if query.training_id:
            resources = [r for r in resources if r == query.training_id]
    records, total = (
        joblogs.search_logs(
            platform_store(),
            ctx.appkey,
            kind,
            resource_ids=resources,
            level=query.log_level,
            since=query.since,
            until=query.until,
            text=query.text,
            page=query.page,
            limit=query.limit,
        )
        if resources
        else ([], 0)
    )
    for record in records:
        record.category = query.category
        if query.category == INFERENCE:
            _inference_fields(record, stages)
    return ListResult(records, Paging(page=query.page, limit=query.limit, total_count=total))


def _logged_stages(appkey: str, endpoint_id: str | None, stage_id: str | None) -> dict[str, str]:
    """Stage id -> endpoint id of the tenant's stages created with ``useLog``."""
    with get_database().session(read_only=True) as session:
        stmt = select(models.EndpointStage).where(models.EndpointStage.appkey == appkey)
        if endpoint_id:
            stmt = stmt.where(models.EndpointStage.endpoint_id == endpoint_id)
        if stage_id:
            stmt = stmt.where(models.EndpointStage.id == stage_id)
        return {
            row.id: row.endpoint_id
            for row in session.scalars(stmt)
            if (row.spec or {}).get("use_log")
        }


def _inference_fields(record: LogRecord, stages: dict[str, str]) -> None:
    """The endpoint log fields of the seed: every line names its endpoint and stage; a
    gateway line (one per call) also its inferenceId, action and modelName."""
    record.endpoint_stage_id = record.resource_id
    record.endpoint_id = stages.get(record.resource_id or "")
    if record.source != "gateway":
        record.model_name = record.source.split(".", 1)[0] if "." in record.source else None
        return
    try:
        call = json.loads(record.body)
    except ValueError:
        return
    if isinstance(call, dict):
        record.inference_id = call.get("inferenceId")
        record.action = call.get("action")
        record.model_name = call.get("modelName")
