"""The hyperparameter tuning lifecycle the tick settles, identical on SQLite and PostgreSQL.

Each test drives ``tunings.reconcile`` (and the driver's side of the service) directly
against a fake Ray: tunings the cluster lost, the driver's result file with its status
detail, stops, never-dispatched requests, the capacity of a trial's nodes, terminal rows that
must stay put, and the trial counts and optimal trial each backend computes.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.engine import make_url

from chalicelib.dispatch import JobState
from chalicelib.dispatch.fake import FakeBackend
from chalicelib.domain.common import utc_now
from chalicelib.domain.tuning import HyperparameterTuningCreate, TrialQuery
from chalicelib.errors import InvalidTransition
from chalicelib.objectstore import platform_store
from chalicelib.services import jobs, tunings
from chalicelib.services.tunings import TuningService
from chalicelib.store import models
from chalicelib.store.db import Database
from tests.integration import trainings_fixtures, tunings_fixtures
from tests.integration.trainings_fixtures import Installer, UnreachableBackend, one_node
from tests.integration.tunings_fixtures import TuningBodies, TuningRow, tuning_row

# The fixtures this module uses (see tests/integration/*_fixtures.py).
file_root = trainings_fixtures.file_root
use_backend = trainings_fixtures.use_backend
ray = trainings_fixtures.ray
tuning_bodies = tunings_fixtures.tuning_bodies

FAIL = "FAIL_HYPERPARAMETER_TUNING"
PAST_GRACE = jobs.NOT_DISPATCHED_GRACE + timedelta(seconds=5)


# --- helpers --------------------------------------------------------------------------------


def create(
    database: Database, appkey: str, bodies: TuningBodies, name: str = "tune", **overrides: Any
) -> str:
    """A CREATE_REQUESTED tuning, committed and not dispatched."""
    body = HyperparameterTuningCreate.model_validate(bodies.own_code(name, **overrides))
    with database.session() as session:
        _, tuning_id = TuningService(session, appkey).create(body)
    return tuning_id


def dispatched(
    database: Database, appkey: str, bodies: TuningBodies, name: str = "tune", **overrides: Any
) -> str:
    """A tuning whose driver Ray accepted (CREATE_IN_PROGRESS)."""
    tuning_id = create(database, appkey, bodies, name, **overrides)
    tunings.dispatch(database, tuning_id)
    assert now(database, tuning_id).status == "CREATE_IN_PROGRESS"
    return tuning_id


def running(
    database: Database, appkey: str, bodies: TuningBodies, ray: FakeBackend, **kw: Any
) -> str:
    """A tuning whose driver reported RUNNING, with Ray agreeing."""
    tuning_id = dispatched(database, appkey, bodies, **kw)
    report(database, tuning_id, "RUNNING")
    ray.set_state(tuning_id, JobState.RUNNING)
    return tuning_id


def report(
    database: Database,
    tuning_id: str,
    target: str,
    reason: str | None = None,
    detail: str | None = None,
) -> str:
    with database.session() as session:
        return tunings.report(session, tuning_id, target, reason, detail)


def upsert(database: Database, tuning_id: str, number: int, **payload: Any) -> dict[str, Any]:
    with database.session() as session:
        return tunings.upsert_trial(session, tuning_id, {"number": number, **payload})


def stop(database: Database, appkey: str, tuning_id: str) -> None:
    with database.session() as session:
        TuningService(session, appkey).stop(tuning_id)


def view(database: Database, appkey: str, tuning_id: str) -> dict[str, Any]:
    with database.session(read_only=True) as session:
        found = TuningService(session, appkey).get(tuning_id)
        return found.model_dump(mode="json", by_alias=True)


def now(database: Database, tuning_id: str) -> TuningRow:
    row = tuning_row(database, tuning_id)
    assert row is not None
    return row


def write_result(
    tuning_id: str, status: str, reason: str | None = None, detail: str | None = None
) -> None:
    """What the driver leaves behind before it reports (and before it may die)."""
    payload = json.dumps({"status": status, "reason": reason, "detail": detail}).encode()
    platform_store().write(tunings.JOB.result_key(tuning_id), payload)


def backdate(database: Database, tuning_id: str, **ages: timedelta) -> None:
    moment = utc_now()
    with database.session() as session:
        session.execute(
            update(models.HyperparameterTuning)
            .where(models.HyperparameterTuning.id == tuning_id)
            .values({column: moment - age for column, age in ages.items()})
        )


# --- what Ray says of a tuning the database thinks is alive ---------------------------------


def test_a_running_tuning_the_cluster_forgot_fails_naming_the_cluster(
    database: Database, appkey: str, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = running(database, appkey, tuning_bodies, ray)
    ray.forget(tuning_id)

    tunings.reconcile(database)

    row = now(database, tuning_id)
    assert row.status == FAIL
    assert row.status_reason is not None
    assert "Ray cluster" in row.status_reason and tuning_id in row.status_reason
    assert row.status_detail is None
    assert row.ended_at is not None and row.started_at is not None


def test_the_result_file_settles_a_tuning_with_its_status_detail(
    database: Database, appkey: str, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = running(database, appkey, tuning_bodies, ray)
    before = now(database, tuning_id)
    platform_store().write(
        tunings.JOB.result_key(tuning_id),
        json.dumps({"status": "COMPLETE", "reason": None, "detail": "GoalReached"}).encode(),
    )
    ray.set_state(tuning_id, JobState.SUCCEEDED)

    tunings.reconcile(database)

    row = now(database, tuning_id)
    assert row.status == "COMPLETE"
    assert row.status_detail == "GoalReached"
    assert row.status_reason is None
    assert row.version == before.version + 2  # through COMPLETE_IN_PROGRESS
    assert row.ended_at is not None and row.started_at == before.started_at
    shown = view(database, appkey, tuning_id)
    assert shown["hyperparameterTuningStatusCode"] == "COMPLETE"
    assert shown["hyperparameterTuningStatusDetail"] == "GoalReached"


def test_a_failure_in_the_result_file_keeps_the_drivers_reason(
    database: Database, appkey: str, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = running(database, appkey, tuning_bodies, ray)
    write_result(tuning_id, FAIL, "3 trials failed")
    ray.set_state(tuning_id, JobState.SUCCEEDED)

    tunings.reconcile(database)

    row = now(database, tuning_id)
    assert (row.status, row.status_reason, row.status_detail) == (FAIL, "3 trials failed", None)


def test_a_driver_ray_failed_without_a_result_fails_with_rays_message(
    database: Database, appkey: str, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = running(database, appkey, tuning_bodies, ray)
    ray.set_state(tuning_id, JobState.FAILED, "Job driver was OOM-killed")

    tunings.reconcile(database)

    row = now(database, tuning_id)
    assert row.status == FAIL
    assert row.status_reason is not None
    assert "Job driver was OOM-killed" in row.status_reason and "FAILED" in row.status_reason


def test_a_tuning_still_running_is_left_alone(
    database: Database, appkey: str, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = running(database, appkey, tuning_bodies, ray)
    before = now(database, tuning_id)

    tunings.reconcile(database)

    assert now(database, tuning_id) == before
    assert ray.stopped == []


# --- stops ----------------------------------------------------------------------------------


def test_a_stopping_tuning_ends_stopped_once_ray_stopped_it(
    database: Database, appkey: str, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = running(database, appkey, tuning_bodies, ray)
    stop(database, appkey, tuning_id)
    assert now(database, tuning_id).status == "STOP_IN_PROGRESS"

    # Ray has not stopped it yet: the tick asks again and waits.
    tunings.reconcile(database)
    assert now(database, tuning_id).status == "STOP_IN_PROGRESS"
    assert ray.stopped == [tuning_id]
    assert ray.states[tuning_id].status == JobState.STOPPED

    tunings.reconcile(database)
    row = now(database, tuning_id)
    assert row.status == "STOPPED"
    assert row.status_reason == "stopped by the user"
    assert row.ended_at is not None


def test_a_stopping_tuning_the_cluster_forgot_ends_stopped(
    database: Database, appkey: str, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = running(database, appkey, tuning_bodies, ray)
    stop(database, appkey, tuning_id)
    ray.forget(tuning_id)

    tunings.reconcile(database)

    assert now(database, tuning_id).status == "STOPPED"


def test_a_stop_wins_over_a_result_the_driver_left_behind(
    database: Database, appkey: str, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = running(database, appkey, tuning_bodies, ray)
    stop(database, appkey, tuning_id)
    write_result(tuning_id, "COMPLETE", detail="MaxTrialsReached")
    ray.set_state(tuning_id, JobState.SUCCEEDED)

    tunings.reconcile(database)

    row = now(database, tuning_id)
    assert (row.status, row.status_detail) == ("STOPPED", None)


# --- requests the create never dispatched, and capacity --------------------------------------


def test_a_request_never_dispatched_is_dispatched_after_the_grace_period(
    database: Database, appkey: str, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = create(database, appkey, tuning_bodies)

    tunings.reconcile(database)  # the create request is still about to dispatch it
    assert now(database, tuning_id).status == "CREATE_REQUESTED"
    assert ray.submit_calls == 0

    backdate(database, tuning_id, created_at=PAST_GRACE)
    tunings.reconcile(database)

    row = now(database, tuning_id)
    assert row.status == "CREATE_IN_PROGRESS"
    assert row.dispatched_at is not None
    assert list(ray.jobs) == [tuning_id]
    assert ray.jobs[tuning_id].entrypoint.endswith(f"-m runners.tuning {tuning_id}")
    assert ray.jobs[tuning_id].num_cpus == 0


def test_a_request_fails_once_ray_was_unreachable_for_ten_minutes(
    database: Database, appkey: str, tuning_bodies: TuningBodies, use_backend: Installer
) -> None:
    backend = use_backend(UnreachableBackend())
    tuning_id = create(database, appkey, tuning_bodies)
    backdate(database, tuning_id, created_at=timedelta(minutes=11))

    tunings.reconcile(database)

    row = now(database, tuning_id)
    assert backend.submit_calls == 1
    assert row.status == "CREATE_FAILED"
    assert row.status_reason is not None and "unreachable" in row.status_reason


@pytest.mark.parametrize(
    ("instances", "parallel", "expected"),
    [(2, 2, "CREATE_IN_PROGRESS"), (4, 2, "CREATE_FAILED"), (3, 1, "CREATE_FAILED")],
    ids=["2 trials x 1 node fit", "2 trials x 2 nodes: one trial does not fit", "1 x 3 nodes"],
)
def test_one_trial_must_fit_the_cluster(
    database: Database,
    appkey: str,
    tuning_bodies: TuningBodies,
    use_backend: Installer,
    instances: int,
    parallel: int,
    expected: str,
) -> None:
    """Room for one trial's nodes is enough: more trials run as the cluster frees room."""
    backend = use_backend(FakeBackend(one_node(cpus=1)))
    tuning_id = create(
        database,
        appkey,
        tuning_bodies,
        instanceCount=instances,
        parallelTrialCount=parallel,
    )

    tunings.dispatch(database, tuning_id)

    row = now(database, tuning_id)
    assert row.status == expected
    if expected == "CREATE_FAILED":
        assert row.status_reason is not None and "no capacity" in row.status_reason
        assert backend.submit_calls == 0
    else:
        assert list(backend.jobs) == [tuning_id]


# --- settled rows ---------------------------------------------------------------------------


def _complete(database: Database, appkey: str, tuning_id: str) -> None:
    report(database, tuning_id, "COMPLETE", detail="MaxTrialsReached")


def _stopped(database: Database, appkey: str, tuning_id: str) -> None:
    stop(database, appkey, tuning_id)
    report(database, tuning_id, "STOPPED")


def _failed(database: Database, appkey: str, tuning_id: str) -> None:
    report(database, tuning_id, FAIL, "boom")


@pytest.mark.parametrize(
    ("settle", "status"),
    [(_complete, "COMPLETE"), (_stopped, "STOPPED"), (_failed, FAIL)],
    ids=["COMPLETE", "STOPPED", FAIL],
)
def test_an_ended_tuning_is_never_reopened(
    database: Database,
    appkey: str,
    tuning_bodies: TuningBodies,
    ray: FakeBackend,
    settle: Any,
    status: str,
) -> None:
    tuning_id = running(database, appkey, tuning_bodies, ray, timeoutMinutes=1)
    settle(database, appkey, tuning_id)
    before = now(database, tuning_id)
    assert before.status == status
    stops = list(ray.stopped)

    ray.set_state(tuning_id, JobState.FAILED, "a late failure")
    write_result(tuning_id, FAIL, "a late result", "GoalReached")
    backdate(database, tuning_id, started_at=timedelta(days=1), created_at=timedelta(days=1))
    tunings.reconcile(database)
    ray.forget(tuning_id)
    tunings.reconcile(database)
    for late in ("RUNNING", "COMPLETE" if status != "COMPLETE" else FAIL):
        with pytest.raises(InvalidTransition):
            report(database, tuning_id, late, detail="GoalReached")
    with pytest.raises(InvalidTransition):
        stop(database, appkey, tuning_id)

    after = now(database, tuning_id)
    assert (after.status, after.status_reason, after.status_detail, after.version) == (
        before.status,
        before.status_reason,
        before.status_detail,
        before.version,
    )
    assert after.ended_at == before.ended_at
    assert ray.stopped == stops


def _stopped_by_ray(database: Database, appkey: str, ray: FakeBackend, tuning_id: str) -> str:
    stop(database, appkey, tuning_id)
    tunings.reconcile(database)  # asks Ray to stop the driver
    return "STOPPED"


def _forgotten(database: Database, appkey: str, ray: FakeBackend, tuning_id: str) -> str:
    ray.forget(tuning_id)
    return FAIL


@pytest.mark.parametrize(
    "scenario", [_stopped_by_ray, _forgotten], ids=["stopped", "forgotten by ray"]
)
def test_the_trials_of_a_tuning_the_tick_settles_do_not_stay_running(
    database: Database, appkey: str, tuning_bodies: TuningBodies, ray: FakeBackend, scenario: Any
) -> None:
    tuning_id = running(database, appkey, tuning_bodies, ray)
    upsert(database, tuning_id, 0, status="RUNNING")
    upsert(database, tuning_id, 1)  # CREATED, about to start
    expected = scenario(database, appkey, ray, tuning_id)

    tunings.reconcile(database)

    assert now(database, tuning_id).status == expected
    shown = view(database, appkey, tuning_id)
    assert shown["runningTrialCount"] == 0
    assert shown["killedTrialCount"] == 2


def test_a_tuning_past_its_timeout_is_failed_and_its_driver_stopped(
    database: Database, appkey: str, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = running(database, appkey, tuning_bodies, ray, timeoutMinutes=5)
    backdate(database, tuning_id, started_at=timedelta(minutes=5) + jobs.TIMEOUT_GRACE * 2)

    tunings.reconcile(database)

    row = now(database, tuning_id)
    assert row.status == FAIL
    assert row.status_reason == "exceeded timeout of 5 minutes"
    assert ray.stopped == [tuning_id]


# --- the driver's side on each backend ------------------------------------------------------


def test_the_job_spec_names_an_optuna_storage_beside_the_platform_database(
    database: Database, appkey: str, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = dispatched(database, appkey, tuning_bodies)
    with database.session(read_only=True) as session:
        spec = tunings.job_spec(session, tuning_id)

    assert spec["studyName"] == tuning_id
    assert spec["trials"] == []
    storage = make_url(spec["optunaStorage"]["url"])
    platform = make_url(str(database.engine.url))
    if database.is_sqlite:
        assert storage.get_backend_name() == "sqlite"
        assert storage.database is not None and platform.database is not None
        assert storage.database.endswith("-optuna.db")
        assert storage.database != platform.database
    else:
        # the same database, Optuna's tables kept apart in their own schema
        assert storage.get_backend_name() == "postgresql"
        assert storage.database == platform.database
        options = spec["optunaStorage"]["engineKwargs"]["connect_args"]["options"]
        assert options == "-csearch_path=optuna"


@pytest.mark.parametrize(
    ("objective_type", "best"), [("MAXIMIZE", 2), ("MINIMIZE", 1)], ids=["MAXIMIZE", "MINIMIZE"]
)
def test_trial_counts_and_the_optimal_trial_agree_on_both_backends(
    database: Database,
    appkey: str,
    tuning_bodies: TuningBodies,
    ray: FakeBackend,
    objective_type: str,
    best: int,
) -> None:
    tuning_id = running(
        database, appkey, tuning_bodies, ray, objectiveTypeCode=objective_type, maxTrialCount=8
    )
    values = {0: 0.5, 1: -1.25, 2: 7.0, 3: 0.5}
    for number, value in values.items():
        created = upsert(database, tuning_id, number, params={"learning_rate": "0.01"})
        assert created["status"] == "CREATED"
        upsert(database, tuning_id, number, status="RUNNING")
        upsert(
            database,
            tuning_id,
            number,
            status="SUCCEEDED",
            objectiveValue=value,
            metrics={"accuracy": {"min": value, "max": value, "latest": value}},
        )
    upsert(database, tuning_id, 4, status="RUNNING")
    upsert(database, tuning_id, 4, status="METRICS_UNAVAILABLE")  # no value: never optimal
    upsert(database, tuning_id, 5, status="RUNNING", objectiveValue=100.0)
    upsert(database, tuning_id, 5, status="EARLY_STOPPED")
    upsert(database, tuning_id, 6, status="RUNNING")
    with pytest.raises(InvalidTransition):
        upsert(database, tuning_id, 2, status="FAILED")

    shown = view(database, appkey, tuning_id)
    counts = (
        shown["successfulTrialCount"],
        shown["runningTrialCount"],
        shown["metricsUnavailableTrialCount"],
        shown["earlyStoppedTrialCount"],
        shown["failedTrialCount"],
    )
    assert counts == (4, 1, 1, 1, 0)
    assert shown["optimalTrial"]["trialName"] == f"trial-{best}"
    assert shown["optimalTrial"]["objectiveMetricValue"] == values[best]
    assert shown["optimalTrial"]["trialMetricList"][0]["trialMetricLatestValue"] == str(
        values[best]
    )

    with database.session(read_only=True) as session:
        listed, paging = TuningService(session, appkey).trials(
            tuning_id, TrialQuery.model_validate({"trialStatusCodeList": ["SUCCEEDED"]})
        )
    assert [t.trial_name for t in listed] == ["trial-0", "trial-1", "trial-2", "trial-3"]
    assert paging.total_count == 4


def test_deleting_an_ended_tuning_removes_its_trials_on_both_backends(
    database: Database, appkey: str, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = running(database, appkey, tuning_bodies, ray)
    for number in range(3):
        upsert(database, tuning_id, number, status="RUNNING")
        upsert(database, tuning_id, number, status="SUCCEEDED", objectiveValue=float(number))
    _complete(database, appkey, tuning_id)

    with database.session() as session:
        TuningService(session, appkey).delete(tuning_id)

    assert tuning_row(database, tuning_id) is None
    assert tunings_fixtures.count_trials(database) == 0
