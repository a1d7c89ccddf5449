"""Monitoring samples, chart series, and NSML's zombie rule with an injected clock (both
SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta

from chalicelib.domain.monitoring import MetricSample
from chalicelib.domain.training import TrainingCreate
from chalicelib.services import monitoring, trainings
from chalicelib.services.trainings import TrainingService
from chalicelib.store import models
from chalicelib.store.db import Database
from tests.integration import trainings_fixtures
from tests.integration.trainings_fixtures import Bodies, flavor, image_id

file_root = trainings_fixtures.file_root
use_backend = trainings_fixtures.use_backend
ray = trainings_fixtures.ray
bodies = trainings_fixtures.bodies

T0 = datetime(2026, 11, 22, 8, 0, 0)


def running_training(database: Database, appkey: str, bodies: Bodies, *, gpu: bool) -> str:
    overrides = (
        {
            "flavorId": flavor("g2.t4.c8m64").id,
            "imageId": image_id("Ubuntu 22.04 GPU PyTorch Training"),
        }
        if gpu
        else {}
    )
    body = TrainingCreate.model_validate(bodies.own_code("monitored", **overrides))
    with database.session() as session:
        _, training_id = TrainingService(session, appkey).create(body)
    with database.session() as session:
        trainings.report(session, training_id, "RUNNING", None)
    return training_id


def feed(database: Database, training_id: str, start: datetime, minutes: int, gpu: float) -> None:
    samples = [
        MetricSample(
            time=start + timedelta(minutes=m),
            node="node0",
            cpu_percent=50.0,
            memory_bytes=2**30,
            gpu_percent=gpu,
            gpu_memory_bytes=2**30,
        )
        for m in range(minutes + 1)
    ]
    with database.session() as session:
        monitoring.record(session, "training", training_id, samples)


def zombie_since(database: Database, training_id: str) -> datetime | None:
    with database.session(read_only=True) as session:
        row = session.get(models.Training, training_id)
        assert row is not None
        return row.zombie_since


def test_gpus_idle_for_an_hour_flag_the_training_and_work_clears_it(
    database: Database, appkey: str, bodies: Bodies, ray: object
) -> None:
    training_id = running_training(database, appkey, bodies, gpu=True)
    feed(database, training_id, T0, 59, gpu=0.0)
    assert monitoring.flag_zombies(database, now=T0 + timedelta(minutes=59)) == []
    assert zombie_since(database, training_id) is None  # not yet an hour

    feed(database, training_id, T0 + timedelta(minutes=60), 1, gpu=0.0)
    flagged_at = T0 + timedelta(minutes=61)
    assert monitoring.flag_zombies(database, now=flagged_at) == [training_id]
    assert zombie_since(database, training_id) == flagged_at
    with database.session(read_only=True) as session:
        view = TrainingService(session, appkey).get(training_id)
    assert view.zombie and view.zombie_since == flagged_at

    feed(database, training_id, T0 + timedelta(minutes=62), 0, gpu=35.0)
    assert monitoring.flag_zombies(database, now=T0 + timedelta(minutes=62)) == []
    assert zombie_since(database, training_id) is None


def test_a_gpu_busy_once_in_the_hour_is_no_zombie(
    database: Database, appkey: str, bodies: Bodies, ray: object
) -> None:
    training_id = running_training(database, appkey, bodies, gpu=True)
    feed(database, training_id, T0, 30, gpu=0.0)
    feed(database, training_id, T0 + timedelta(minutes=31), 0, gpu=1.5)
    feed(database, training_id, T0 + timedelta(minutes=32), 40, gpu=0.0)
    assert monitoring.flag_zombies(database, now=T0 + timedelta(minutes=72)) == []


def test_cpu_trainings_are_never_zombies(
    database: Database, appkey: str, bodies: Bodies, ray: object
) -> None:
    training_id = running_training(database, appkey, bodies, gpu=False)
    feed(database, training_id, T0, 90, gpu=0.0)
    assert monitoring.flag_zombies(database, now=T0 + timedelta(minutes=90)) == []


def test_series_buckets_samples_per_node(
    database: Database, appkey: str, bodies: Bodies, ray: object
) -> None:
    training_id = running_training(database, appkey, bodies, gpu=False)
    feed(database, training_id, T0, 99, gpu=0.0)
    with database.session() as session:
        monitoring.record(
            session,
            "training",
            training_id,
            [MetricSample(time=T0, node="node1", cpu_percent=10, memory_bytes=5)],
        )
    with database.session(read_only=True) as session:
        nodes = monitoring.series(session, training_id, since=None, until=None, points=10)
        window = monitoring.series(
            session, training_id, since=T0 + timedelta(minutes=90), until=None, points=300
        )
    assert [n.node for n in nodes] == ["node0", "node1"]
    assert len(nodes[0].points) == 10 and nodes[0].points[0].cpu_percent == 50.0
    assert nodes[1].points[0].memory_bytes == 5
    assert len(window[0].points) == 10  # minutes 90..99
