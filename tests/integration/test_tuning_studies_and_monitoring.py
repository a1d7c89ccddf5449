"""A tuning's Optuna study goes when the tuning is deleted, and its trials' monitoring samples
come back per trial node, through the in-process app with a fake Ray behind the dispatcher.

The studies are made with Optuna itself at the storage the driver is told about
(``optunaStorage`` and ``studyName`` of the job spec), as the tuning driver makes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from chalicelib import errors
from chalicelib.dispatch.fake import FakeBackend
from chalicelib.services import tunings
from chalicelib.services.tick import tick
from chalicelib.store import models
from chalicelib.store.db import Database
from tests.integration import trainings_fixtures, tunings_fixtures
from tests.integration.conftest import ApiClient, Reply, assert_error
from tests.integration.tunings_fixtures import TuningBodies, tuning_headers

file_root = trainings_fixtures.file_root
use_backend = trainings_fixtures.use_backend
ray = trainings_fixtures.ray
tuning_bodies = tunings_fixtures.tuning_bodies

TUNINGS = "/hyperparameter-tunings"
NOT_FOUND = errors.NotFoundError.result_code
START = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def create(api: ApiClient, bodies: TuningBodies, name: str) -> str:
    reply = api.post(TUNINGS, bodies.own_code(name))
    assert reply.status == 201, reply.body
    tuning_id: str = reply.body["hyperparameterTuning"]["hyperparameterTuningId"]
    return tuning_id


def internal(api: ApiClient, tuning_id: str, leaf: str, body: dict[str, Any]) -> Reply:
    """The tuning driver's call to the internal API, signed with its token."""
    return api.request(
        "POST",
        f"/internal/v1/hyperparameter-tunings/{tuning_id}/{leaf}",
        json_body=body,
        headers=tuning_headers(tuning_id),
        absolute=True,
    )


def finish(api: ApiClient, tuning_id: str) -> None:
    for status in ("RUNNING", "COMPLETE"):
        body = {"status": status, "detail": "MaxTrialsReached" if status == "COMPLETE" else None}
        reply = internal(api, tuning_id, "status", body)
        assert reply.status == 200, reply.body


def driver_job(api: ApiClient, tuning_id: str) -> dict[str, Any]:
    reply = api.request(
        "GET",
        f"/internal/v1/hyperparameter-tunings/{tuning_id}/job",
        headers=tuning_headers(tuning_id),
        absolute=True,
    )
    assert reply.status == 200, reply.body
    job: dict[str, Any] = reply.body["job"]
    return job


@pytest.fixture
def studies() -> Iterator[list[optuna.storages.RDBStorage]]:
    """Storages opened by a test, closed after it."""
    opened: list[optuna.storages.RDBStorage] = []
    yield opened
    for storage in opened:
        storage.engine.dispose()


def run_study(job: dict[str, Any], opened: list[optuna.storages.RDBStorage]) -> str:
    """What the driver does with the job spec: a study of ``studyName``, with two trials."""
    place = job["optunaStorage"]
    storage = optuna.storages.RDBStorage(place["url"], engine_kwargs=place["engineKwargs"])
    opened.append(storage)
    study = optuna.create_study(study_name=job["studyName"], storage=storage)
    study.optimize(lambda trial: trial.suggest_float("lr", 0.001, 0.1), n_trials=2)
    return str(place["url"])


def study_names(url: str) -> list[str]:
    return optuna.get_all_study_names(optuna.storages.RDBStorage(url))


# --- the study goes with the tuning ---------------------------------------------------------


def test_deleting_a_tuning_deletes_its_optuna_study_and_no_other(
    api: ApiClient,
    tuning_bodies: TuningBodies,
    ray: FakeBackend,
    studies: list[optuna.storages.RDBStorage],
) -> None:
    doomed = create(api, tuning_bodies, "doomed")
    kept = create(api, tuning_bodies, "kept")
    url = run_study(driver_job(api, doomed), studies)
    run_study(driver_job(api, kept), studies)
    finish(api, doomed)
    assert sorted(study_names(url)) == sorted([doomed, kept])

    deleted = api.delete(f"{TUNINGS}/{doomed}")

    assert deleted.status == 200, deleted.body
    assert study_names(url) == [kept]
    kept_study = optuna.load_study(study_name=kept, storage=url)
    assert len(kept_study.get_trials()) == 2


def test_deleting_a_tuning_that_never_ran_makes_no_study_storage(
    api: ApiClient, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = create(api, tuning_bodies, "never-ran")
    storage_file = Path(str(make_url(driver_job(api, tuning_id)["optunaStorage"]["url"]).database))
    finish(api, tuning_id)

    assert api.delete(f"{TUNINGS}/{tuning_id}").status == 200
    assert not storage_file.exists()


def test_a_study_that_cannot_be_deleted_is_logged_and_the_tuning_is_deleted_anyway(
    api: ApiClient,
    tuning_bodies: TuningBodies,
    ray: FakeBackend,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tuning_id = create(api, tuning_bodies, "unreadable-storage")
    storage_file = Path(str(make_url(driver_job(api, tuning_id)["optunaStorage"]["url"]).database))
    storage_file.write_bytes(b"this is not an SQLite database" * 100)
    finish(api, tuning_id)

    deleted = api.delete(f"{TUNINGS}/{tuning_id}")

    assert deleted.status == 200, deleted.body
    assert_error(api.get(f"{TUNINGS}/{tuning_id}"), 404, NOT_FOUND)
    (logged,) = [r for r in caplog.records if "Optuna study" in r.getMessage()]
    assert logged.levelname == "ERROR" and logged.exc_info is not None
    assert "left behind" in logged.getMessage()
    assert logged.__dict__["hyperparameterTuningId"] == tuning_id


def test_a_study_left_behind_is_deleted_by_the_sweep_and_no_other(
    api: ApiClient,
    db: Database,
    tuning_bodies: TuningBodies,
    ray: FakeBackend,
    studies: list[optuna.storages.RDBStorage],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    left = create(api, tuning_bodies, "left-behind")
    kept = create(api, tuning_bodies, "kept")
    url = run_study(driver_job(api, left), studies)
    run_study(driver_job(api, kept), studies)
    foreign = optuna.create_study(study_name="not-a-tuning", storage=studies[0])
    finish(api, left)

    def unreachable(*_args: Any) -> bool:
        raise OSError("the study storage is unreachable")

    with monkeypatch.context() as patched:
        patched.setattr(tunings, "delete_study", unreachable)
        assert api.delete(f"{TUNINGS}/{left}").status == 200
    assert sorted(study_names(url)) == sorted([left, kept, foreign.study_name])
    tunings._swept_at.clear()

    outcome = tick(db)

    assert outcome["optuna_studies"] == "ok"
    assert sorted(study_names(url)) == sorted([kept, foreign.study_name])
    assert len(optuna.load_study(study_name=kept, storage=url).get_trials()) == 2
    assert tunings.delete_orphan_studies(db) == []  # nothing left to sweep


# --- monitoring -----------------------------------------------------------------------------


def sample(node: str, minute: int, cpu: float, memory: int) -> dict[str, Any]:
    """A sample as ``runners.monitor.Sampler`` makes it."""
    return {
        "time": (START + timedelta(minutes=minute)).isoformat(),
        "node": node,
        "cpuPercent": cpu,
        "memoryBytes": memory,
    }


def post_samples(api: ApiClient, tuning_id: str) -> None:
    samples = [
        sample("trial0-node0", 0, 50.0, 1000),
        sample("trial0-node0", 1, 100.0, 3000),
        sample("trial1-node0", 1, 25.0, 2000),
    ]
    reply = internal(api, tuning_id, "metrics", {"samples": samples})
    assert reply.status == 200, reply.body
    assert reply.body["recorded"] == 3


def test_the_samples_of_a_tunings_trials_come_back_per_trial_node(
    api: ApiClient, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = create(api, tuning_bodies, "watched")
    post_samples(api, tuning_id)

    every = api.get(f"{TUNINGS}/{tuning_id}/monitoring")
    averaged = api.get(f"{TUNINGS}/{tuning_id}/monitoring", query={"points": 1})
    later = api.get(
        f"{TUNINGS}/{tuning_id}/monitoring",
        query={"since": (START + timedelta(seconds=30)).isoformat()},
    )

    assert every.status == 200, every.body
    monitoring = every.body["monitoring"]
    assert monitoring["resourceId"] == tuning_id
    assert monitoring["zombie"] is False and monitoring["zombieSince"] is None
    assert [n["node"] for n in monitoring["nodeList"]] == ["trial0-node0", "trial1-node0"]
    first = monitoring["nodeList"][0]["points"]
    assert [(p["cpuPercent"], p["memoryBytes"]) for p in first] == [(50.0, 1000), (100.0, 3000)]
    assert first[0]["time"].startswith("2025-01-01T12:00:00")
    trial0 = averaged.body["monitoring"]["nodeList"][0]["points"]
    assert [(p["cpuPercent"], p["memoryBytes"]) for p in trial0] == [(75.0, 2000)]
    recent = {n["node"]: len(n["points"]) for n in later.body["monitoring"]["nodeList"]}
    assert recent == {"trial0-node0": 1, "trial1-node0": 1}


def test_another_tenant_gets_no_monitoring_of_a_tuning(
    api: ApiClient, other_api: ApiClient, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = create(api, tuning_bodies, "private")
    post_samples(api, tuning_id)

    assert_error(other_api.get(f"{TUNINGS}/{tuning_id}/monitoring"), 404, NOT_FOUND)
    unknown = "00000000-0000-0000-0000-000000000000"
    assert_error(api.get(f"{TUNINGS}/{unknown}/monitoring"), 404, NOT_FOUND)


def test_a_deleted_tunings_samples_go_with_it(
    api: ApiClient, db: Database, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = create(api, tuning_bodies, "short-lived")
    post_samples(api, tuning_id)
    finish(api, tuning_id)

    assert api.delete(f"{TUNINGS}/{tuning_id}").status == 200

    with db.session(read_only=True) as session:
        left = session.scalar(
            select(func.count())
            .select_from(models.JobMetric)
            .where(models.JobMetric.resource_id == tuning_id)
        )
    assert left == 0
