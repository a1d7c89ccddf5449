"""The training lifecycle the tick settles, identical on SQLite and PostgreSQL.

Each test drives ``trainings.reconcile`` directly against a fake Ray: jobs the cluster lost,
jobs that ended without a report, the driver's result file, stops, never-dispatched requests,
timeouts, terminal rows that must stay put, and reconciles racing each other.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.dispatch import JobState, JobSubmission
from chalicelib.dispatch.fake import FakeBackend
from chalicelib.domain.training import TrainingCreate
from chalicelib.errors import InvalidTransition, StaleStateError
from chalicelib.objectstore import platform_store
from chalicelib.services import trainings
from chalicelib.services.trainings import TrainingService
from chalicelib.store import models
from chalicelib.store.db import Database
from tests.contract.conftest import race
from tests.integration import trainings_fixtures
from tests.integration.trainings_fixtures import (
    Bodies,
    Installer,
    TrainingRow,
    UnreachableBackend,
    backdate,
    training_row,
)

# The fixtures this module uses (see tests/integration/trainings_fixtures.py).
file_root = trainings_fixtures.file_root
use_backend = trainings_fixtures.use_backend
ray = trainings_fixtures.ray
bodies = trainings_fixtures.bodies

PAST_GRACE = trainings.NOT_DISPATCHED_GRACE + timedelta(seconds=5)


# --- helpers --------------------------------------------------------------------------------


def create(
    database: Database, appkey: str, bodies: Bodies, name: str = "job", **overrides: Any
) -> str:
    """A CREATE_REQUESTED training, committed and not dispatched."""
    body = TrainingCreate.model_validate(bodies.own_code(name, **overrides))
    with database.session() as session:
        _, training_id = TrainingService(session, appkey).create(body)
    return training_id


def dispatched(
    database: Database, appkey: str, bodies: Bodies, name: str = "job", **overrides: Any
) -> str:
    """A training Ray accepted (CREATE_IN_PROGRESS)."""
    training_id = create(database, appkey, bodies, name, **overrides)
    trainings.dispatch(database, training_id)
    assert now(database, training_id).status == "CREATE_IN_PROGRESS"
    return training_id


def running(database: Database, appkey: str, bodies: Bodies, ray: FakeBackend, **kw: Any) -> str:
    """A training whose driver reported RUNNING, with Ray agreeing."""
    training_id = dispatched(database, appkey, bodies, **kw)
    report(database, training_id, "RUNNING")
    ray.set_state(training_id, JobState.RUNNING)
    return training_id


def report(database: Database, training_id: str, target: str, reason: str | None = None) -> str:
    with database.session() as session:
        return trainings.report(session, training_id, target, reason)


def stop(database: Database, appkey: str, training_id: str) -> None:
    with database.session() as session:
        TrainingService(session, appkey).stop(training_id)


def now(database: Database, training_id: str) -> TrainingRow:
    row = training_row(database, training_id)
    assert row is not None
    return row


def write_result(training_id: str, status: str, reason: str | None = None) -> None:
    """What the driver leaves behind before it reports (and before it may die)."""
    payload = json.dumps({"status": status, "reason": reason}).encode()
    platform_store().write(trainings.result_key(training_id), payload)


# --- what Ray says of a job the database thinks is alive ------------------------------------


def test_a_running_job_the_cluster_forgot_fails_naming_the_cluster(
    database: Database, appkey: str, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = running(database, appkey, bodies, ray)
    ray.forget(training_id)

    trainings.reconcile(database)

    row = now(database, training_id)
    assert row.status == "FAIL_TRAIN"
    assert row.status_reason is not None
    assert "Ray cluster" in row.status_reason and training_id in row.status_reason
    assert row.ended_at is not None and row.started_at is not None


def test_a_stopping_job_the_cluster_forgot_ends_stopped(
    database: Database, appkey: str, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = running(database, appkey, bodies, ray)
    stop(database, appkey, training_id)
    ray.forget(training_id)

    trainings.reconcile(database)

    assert now(database, training_id).status == "STOPPED"


def test_a_job_ray_failed_without_a_result_fails_with_rays_message(
    database: Database, appkey: str, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = running(database, appkey, bodies, ray)
    ray.set_state(training_id, JobState.FAILED, "Job driver was OOM-killed")

    trainings.reconcile(database)

    row = now(database, training_id)
    assert row.status == "FAIL_TRAIN"
    assert row.status_reason is not None
    assert "Job driver was OOM-killed" in row.status_reason
    assert "FAILED" in row.status_reason


def test_a_job_that_failed_before_it_ran_fails_too(
    database: Database, appkey: str, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = dispatched(database, appkey, bodies)
    ray.set_state(training_id, JobState.FAILED, "runtime env setup failed")

    trainings.reconcile(database)

    row = now(database, training_id)
    assert row.status == "FAIL_TRAIN"
    assert row.status_reason is not None and "runtime env setup failed" in row.status_reason


def test_the_drivers_result_file_settles_a_job_that_could_not_report(
    database: Database, appkey: str, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = running(database, appkey, bodies, ray)
    before = now(database, training_id)
    write_result(training_id, "COMPLETE")
    ray.set_state(training_id, JobState.SUCCEEDED)

    trainings.reconcile(database)

    row = now(database, training_id)
    assert row.status == "COMPLETE"
    assert row.status_reason is None
    assert row.version == before.version + 2  # through COMPLETE_IN_PROGRESS
    assert row.ended_at is not None and row.started_at == before.started_at


def test_a_failure_in_the_result_file_keeps_the_drivers_reason(
    database: Database, appkey: str, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = running(database, appkey, bodies, ray)
    write_result(training_id, "FAIL_TRAIN", "train.py exited with code 3")
    ray.set_state(training_id, JobState.SUCCEEDED)

    trainings.reconcile(database)

    row = now(database, training_id)
    assert (row.status, row.status_reason) == ("FAIL_TRAIN", "train.py exited with code 3")


def test_a_job_still_running_is_left_alone(
    database: Database, appkey: str, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = running(database, appkey, bodies, ray)
    before = now(database, training_id)

    trainings.reconcile(database)

    assert now(database, training_id) == before
    assert ray.stopped == []


def test_a_dispatched_request_moves_on_when_ray_runs_it(
    database: Database, appkey: str, bodies: Bodies, ray: FakeBackend
) -> None:
    """The dispatcher's own step was lost (it died after submitting): the tick takes it."""
    training_id = create(database, appkey, bodies)
    ray.submit(JobSubmission(training_id, f"python -m runners.training {training_id}"))
    ray.set_state(training_id, JobState.RUNNING)
    with database.session() as session:
        row = session.get(models.Training, training_id)
        assert row is not None
        row.dispatched_at = row.created_at

    trainings.reconcile(database)

    assert now(database, training_id).status == "CREATE_IN_PROGRESS"


# --- stops ----------------------------------------------------------------------------------


def test_a_stopping_training_ends_stopped_once_ray_stopped_it(
    database: Database, appkey: str, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = running(database, appkey, bodies, ray)
    stop(database, appkey, training_id)
    assert now(database, training_id).status == "STOP_IN_PROGRESS"

    # Ray has not stopped it yet: the tick asks again and waits.
    trainings.reconcile(database)
    assert now(database, training_id).status == "STOP_IN_PROGRESS"
    assert ray.stopped == [training_id]
    assert ray.states[training_id].status == JobState.STOPPED

    trainings.reconcile(database)
    row = now(database, training_id)
    assert row.status == "STOPPED"
    assert row.status_reason == "stopped by the user"
    assert row.ended_at is not None


def test_a_stop_during_the_upload_of_a_job_that_then_succeeded_still_settles(
    database: Database, appkey: str, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = running(database, appkey, bodies, ray)
    report(database, training_id, "COMPLETE_IN_PROGRESS")  # the driver starts its upload
    stop(database, appkey, training_id)  # the user presses stop during the upload
    assert now(database, training_id).status == "STOP_IN_PROGRESS"
    write_result(training_id, "COMPLETE")  # the upload finished anyway
    ray.set_state(training_id, JobState.SUCCEEDED)

    trainings.reconcile(database)
    trainings.reconcile(database)

    assert now(database, training_id).status == "STOPPED"  # the user's stop wins


# --- requests the create never dispatched ---------------------------------------------------


def test_a_request_never_dispatched_is_dispatched_after_the_grace_period(
    database: Database, appkey: str, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = create(database, appkey, bodies)

    trainings.reconcile(database)  # the create request is still about to dispatch it
    assert now(database, training_id).status == "CREATE_REQUESTED"
    assert ray.submit_calls == 0

    backdate(database, training_id, created_at=PAST_GRACE)
    trainings.reconcile(database)

    row = now(database, training_id)
    assert row.status == "CREATE_IN_PROGRESS"
    assert row.dispatched_at is not None
    assert list(ray.jobs) == [training_id]
    assert ray.jobs[training_id].entrypoint.endswith(f"-m runners.training {training_id}")


@pytest.mark.parametrize(
    ("age_minutes", "expected"), [(5, "CREATE_REQUESTED"), (11, "CREATE_FAILED")]
)
def test_a_request_fails_once_ray_was_unreachable_for_ten_minutes(
    database: Database,
    appkey: str,
    bodies: Bodies,
    use_backend: Installer,
    age_minutes: int,
    expected: str,
) -> None:
    backend = use_backend(UnreachableBackend())
    training_id = create(database, appkey, bodies)
    backdate(database, training_id, created_at=timedelta(minutes=age_minutes))

    trainings.reconcile(database)

    row = now(database, training_id)
    assert backend.submit_calls == 1
    assert row.status == expected
    if expected == "CREATE_FAILED":
        assert row.status_reason is not None and "unreachable" in row.status_reason


def test_a_request_too_big_for_the_cluster_fails_when_the_tick_dispatches_it(
    database: Database, appkey: str, bodies: Bodies, use_backend: Installer
) -> None:
    backend = use_backend(FakeBackend(trainings_fixtures.one_node(cpus=2)))
    big = trainings_fixtures.flavor(trainings_fixtures.FOUR_CPU)
    training_id = create(database, appkey, bodies, flavorId=big.id)
    backdate(database, training_id, created_at=PAST_GRACE)

    trainings.reconcile(database)

    row = now(database, training_id)
    assert row.status == "CREATE_FAILED"
    assert row.status_reason is not None
    assert "no capacity" in row.status_reason and big.name in row.status_reason
    assert backend.submit_calls == 0


# --- settled rows and timeouts --------------------------------------------------------------


def _complete(database: Database, appkey: str, training_id: str) -> None:
    report(database, training_id, "COMPLETE")


def _stopped(database: Database, appkey: str, training_id: str) -> None:
    stop(database, appkey, training_id)
    report(database, training_id, "STOPPED")


def _failed(database: Database, appkey: str, training_id: str) -> None:
    report(database, training_id, "FAIL_TRAIN", "boom")


@pytest.mark.parametrize(
    ("settle", "status"),
    [(_complete, "COMPLETE"), (_stopped, "STOPPED"), (_failed, "FAIL_TRAIN")],
    ids=["COMPLETE", "STOPPED", "FAIL_TRAIN"],
)
def test_terminal_trainings_are_never_touched(
    database: Database,
    appkey: str,
    bodies: Bodies,
    ray: FakeBackend,
    settle: Any,
    status: str,
) -> None:
    training_id = running(database, appkey, bodies, ray, timeoutMinutes=1)
    settle(database, appkey, training_id)
    before = now(database, training_id)
    assert before.status == status
    stops = list(ray.stopped)

    ray.set_state(training_id, JobState.FAILED, "a late failure")
    write_result(training_id, "FAIL_TRAIN", "a late result")
    backdate(database, training_id, started_at=timedelta(days=1), created_at=timedelta(days=1))
    trainings.reconcile(database)
    ray.forget(training_id)
    trainings.reconcile(database)

    after = now(database, training_id)
    assert (after.status, after.status_reason, after.version) == (
        before.status,
        before.status_reason,
        before.version,
    )
    assert ray.stopped == stops


def test_a_training_past_its_timeout_is_failed_and_its_job_stopped(
    database: Database, appkey: str, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = running(database, appkey, bodies, ray, timeoutMinutes=5)

    # Within the timeout plus the grace the driver has to enforce it: left alone.
    backdate(database, training_id, started_at=timedelta(minutes=6))
    trainings.reconcile(database)
    assert now(database, training_id).status == "RUNNING"
    assert ray.stopped == []

    backdate(database, training_id, started_at=timedelta(minutes=5) + trainings.TIMEOUT_GRACE * 2)
    trainings.reconcile(database)

    row = now(database, training_id)
    assert row.status == "FAIL_TRAIN"
    assert row.status_reason == "exceeded timeout of 5 minutes"
    assert ray.stopped == [training_id]
    assert row.ended_at is not None


# --- races ----------------------------------------------------------------------------------


def _succeeded_with_result(database: Database, ray: FakeBackend, training_id: str) -> str:
    write_result(training_id, "COMPLETE")
    ray.set_state(training_id, JobState.SUCCEEDED)
    return "COMPLETE"


def _forgotten(database: Database, ray: FakeBackend, training_id: str) -> str:
    ray.forget(training_id)
    return "FAIL_TRAIN"


def _timed_out(database: Database, ray: FakeBackend, training_id: str) -> str:
    backdate(database, training_id, started_at=timedelta(days=1))
    return "FAIL_TRAIN"


@pytest.mark.parametrize(
    "scenario",
    [_succeeded_with_result, _forgotten, _timed_out],
    ids=["succeeded with a result", "forgotten by ray", "timed out"],
)
def test_racing_reconciles_settle_a_training_once(
    database: Database, appkey: str, bodies: Bodies, ray: FakeBackend, scenario: Any
) -> None:
    training_id = running(database, appkey, bodies, ray, timeoutMinutes=5)
    before = now(database, training_id)
    expected = scenario(database, ray, training_id)

    outcomes = race(4, lambda _i: trainings.reconcile(database))

    assert outcomes == [None] * 4, outcomes  # a lost race is absorbed, never raised
    row = now(database, training_id)
    assert row.status == expected
    assert row.version == before.version + 2  # one walk of two steps, not two walks
    assert row.ended_at is not None


def test_a_reconcile_racing_the_drivers_own_report_ends_complete_once(
    database: Database, appkey: str, bodies: Bodies, ray: FakeBackend
) -> None:
    training_id = running(database, appkey, bodies, ray)
    before = now(database, training_id)
    _succeeded_with_result(database, ray, training_id)

    def work(index: int) -> Any:
        if index % 2:
            return trainings.reconcile(database)
        return report(database, training_id, "COMPLETE")

    outcomes = race(4, work)

    for outcome in outcomes:
        # A driver that lost the race is told so (409); nothing else may go wrong.
        assert outcome in (None, "COMPLETE") or isinstance(
            outcome, StaleStateError | InvalidTransition
        ), outcome
    row = now(database, training_id)
    assert row.status == "COMPLETE"
    assert row.version == before.version + 2
