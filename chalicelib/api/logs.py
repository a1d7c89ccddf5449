"""Job logs: a training's lines (paged or followed) and a search in the Log & Crash manner."""

from __future__ import annotations

import json
import time
from typing import Any

from chalicelib.api.envelope import ListResult, RequestContext, ResourceApi
from chalicelib.domain import states
from chalicelib.domain.common import Paging, WireModel
from chalicelib.domain.training import LogSearchQuery, TrainingLogQuery
from chalicelib.objectstore import platform_store
from chalicelib.services import joblogs, trainings
from chalicelib.services.joblogs import LogRecord
from chalicelib.store import models
from chalicelib.store.db import get_database
from chalicelib.store.repository import get_owned

api = ResourceApi(__name__, "logs")
FOLLOW_POLL_SECONDS = 0.5
CATEGORIES = {"easymaker.training": trainings.KIND}


class TrainingLog(WireModel):
    log_list: list[LogRecord]
    next_cursor: str | None = None
    training_status_code: str
    paging: Paging | None = None


def _status(appkey: str, training_id: str) -> str:
    with get_database().session(read_only=True) as session:
        row = get_owned(session, models.Training, appkey, training_id, "training")
        return row.status


@api.route(
    "/trainings/{trainingId}/logs",
    "GET",
    summary="A training's log lines: a page, or the lines after a cursor (follow waits)",
    query=TrainingLogQuery,
    response_key="trainingLog",
    response_model=TrainingLog,
)
def training_logs(ctx: RequestContext, training_id: str, query: TrainingLogQuery) -> TrainingLog:
    status = _status(ctx.appkey, training_id)
    store = platform_store()
    prefix = trainings.log_prefix(ctx.appkey, training_id)
    if query.page is not None:
        records, total = joblogs.page_logs(
            store, prefix, page=query.page, limit=query.limit, source=query.source
        )
        paging = Paging(page=query.page, limit=query.limit, total_count=total)
        return TrainingLog(log_list=records, training_status_code=status, paging=paging)
    deadline = time.monotonic() + (query.wait_seconds if query.follow else 0)
    while True:
        records, cursor = joblogs.read_logs(
            store, prefix, cursor=query.cursor, limit=query.limit, source=query.source
        )
        ended = states.is_terminal(states.TRAINING, status)
        if records or ended or time.monotonic() >= deadline:
            return TrainingLog(log_list=records, next_cursor=cursor, training_status_code=status)
        time.sleep(FOLLOW_POLL_SECONDS)
        status = _status(ctx.appkey, training_id)


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
    summary="Search job logs (category easymaker.training; jobs created with useLog)",
    query=LogSearchQuery,
    response_key="logList",
    response_model=LogRecord,
    is_list=True,
)
def search_logs(ctx: RequestContext, query: LogSearchQuery) -> ListResult:
    kind = CATEGORIES[query.category]
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
    return ListResult(records, Paging(page=query.page, limit=query.limit, total_count=total))
