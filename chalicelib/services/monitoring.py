"""Job monitoring: samples the runners report, chart series, and NSML's zombie rule."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from chalicelib.domain import states
from chalicelib.domain.common import utc_now
from chalicelib.domain.monitoring import MetricPoint, MetricSample, NodeSeries
from chalicelib.store import models
from chalicelib.store.db import Database

ZOMBIE_WINDOW = timedelta(hours=1)
RETENTION = timedelta(days=30)


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def record(session: Session, kind: str, resource_id: str, samples: Sequence[MetricSample]) -> int:
    session.add_all(
        models.JobMetric(
            resource_id=resource_id,
            kind=kind,
            node=sample.node,
            sampled_at=_naive_utc(sample.time),
            cpu_percent=sample.cpu_percent,
            memory_bytes=sample.memory_bytes,
            gpu_percent=sample.gpu_percent,
            gpu_memory_bytes=sample.gpu_memory_bytes,
        )
        for sample in samples
    )
    return len(samples)


def series(
    session: Session,
    resource_id: str,
    *,
    since: datetime | None,
    until: datetime | None,
    points: int,
) -> list[NodeSeries]:
    """Per node, at most ``points`` points: samples averaged over equal time buckets."""
    model = models.JobMetric
    stmt = select(model).where(model.resource_id == resource_id)
    if since is not None:
        stmt = stmt.where(model.sampled_at >= _naive_utc(since))
    if until is not None:
        stmt = stmt.where(model.sampled_at < _naive_utc(until))
    rows = session.scalars(stmt.order_by(model.node, model.sampled_at)).all()
    by_node: dict[str, list[models.JobMetric]] = defaultdict(list)
    for row in rows:
        by_node[row.node].append(row)
    return [
        NodeSeries(node=node, points=_bucket(samples, points))
        for node, samples in sorted(by_node.items())
    ]


def _bucket(rows: list[models.JobMetric], points: int) -> list[MetricPoint]:
    if len(rows) <= points:
        return [_point(rows[i : i + 1]) for i in range(len(rows))]
    first, last = rows[0].sampled_at, rows[-1].sampled_at
    width = (last - first) / points
    buckets: dict[int, list[models.JobMetric]] = defaultdict(list)
    for row in rows:
        index = min(points - 1, int((row.sampled_at - first) / width)) if width else 0
        buckets[index].append(row)
    return [_point(group) for _, group in sorted(buckets.items())]


def _point(group: list[models.JobMetric]) -> MetricPoint:
    gpus = [r.gpu_percent for r in group if r.gpu_percent is not None]
    gpu_memory = [r.gpu_memory_bytes for r in group if r.gpu_memory_bytes is not None]
    return MetricPoint(
        time=group[-1].sampled_at,
        cpu_percent=round(sum(r.cpu_percent for r in group) / len(group), 2),
        memory_bytes=int(sum(r.memory_bytes for r in group) / len(group)),
        gpu_percent=round(sum(gpus) / len(gpus), 2) if gpus else None,
        gpu_memory_bytes=int(sum(gpu_memory) / len(gpu_memory)) if gpu_memory else None,
    )


def remove(session: Session, resource_id: str) -> None:
    session.execute(delete(models.JobMetric).where(models.JobMetric.resource_id == resource_id))


def flag_zombies(database: Database, now: datetime | None = None) -> list[str]:
    """NSML's rule: a RUNNING training holding GPUs whose GPUs stayed at 0 % for a whole hour
    is flagged (``zombie_since``); a busy GPU clears the flag. Returns the ids now flagged."""
    now = now or utc_now()
    window_start = now - ZOMBIE_WINDOW
    flagged: list[str] = []
    with database.session() as session:
        model = models.Training
        running = session.scalars(
            select(model).where(model.status == str(states.TrainingStatus.RUNNING))
        ).all()
        for row in running:
            if not int((row.spec.get("flavor") or {}).get("gpuCount") or 0):
                continue
            stats: Any = session.execute(
                select(
                    func.min(models.JobMetric.sampled_at),
                    func.max(models.JobMetric.gpu_percent),
                    func.count(models.JobMetric.id),
                ).where(
                    models.JobMetric.resource_id == row.id,
                    models.JobMetric.sampled_at >= window_start - timedelta(minutes=5),
                    models.JobMetric.gpu_percent.is_not(None),
                )
            ).one()
            oldest, busiest, count = stats
            covers_hour = oldest is not None and oldest <= window_start and count > 0
            idle = covers_hour and (busiest or 0.0) <= 0.0
            if idle and row.zombie_since is None:
                row.zombie_since = now
            elif not idle and row.zombie_since is not None and busiest:
                row.zombie_since = None
            if row.zombie_since is not None:
                flagged.append(row.id)
        session.execute(
            delete(models.JobMetric).where(models.JobMetric.sampled_at < now - RETENTION)
        )
    return flagged
