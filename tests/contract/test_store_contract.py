"""Compare-and-set status writes and row round trips behave the same on every backend."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from chalicelib.domain import states
from chalicelib.domain.common import utc_now
from chalicelib.domain.experiment import ExperimentCreate, ExperimentUpdate
from chalicelib.errors import InvalidTransition, NotFoundError, StaleStateError
from chalicelib.services.experiments import ExperimentService
from chalicelib.store import models
from chalicelib.store.db import Database
from chalicelib.store.repository import set_status
from tests.contract.conftest import insert_experiment, race

E = states.ExperimentStatus
WORKERS = 8


def fetch(session: Session, row_id: str) -> models.Experiment:
    row = session.get(models.Experiment, row_id)
    assert row is not None
    return row


def load(database: Database, row_id: str) -> models.Experiment:
    with database.session() as session:
        return fetch(session, row_id)


def move(database: Database, row_id: str, target: str, reason: str | None = None) -> None:
    with database.session() as session:
        row = fetch(session, row_id)
        set_status(session, row, states.EXPERIMENT, target, reason=reason)


def test_an_allowed_transition_bumps_the_version_and_persists_status_and_reason(
    database: Database, appkey: str
) -> None:
    row_id = insert_experiment(database, appkey)
    stamp = datetime(2024, 2, 29, 23, 59, 59, 123456)
    with database.session() as session:
        row = fetch(session, row_id)
        target = E.CREATE_IN_PROGRESS
        set_status(session, row, states.EXPERIMENT, target, reason="booting", updated_at=stamp)
        assert (row.status, row.version) == (E.CREATE_IN_PROGRESS, 2)
    stored = load(database, row_id)
    assert stored.status == E.CREATE_IN_PROGRESS
    assert stored.status_reason == "booting"
    assert stored.version == 2
    assert stored.updated_at == stamp


def test_a_later_transition_without_reason_clears_the_old_reason(
    database: Database, appkey: str
) -> None:
    row_id = insert_experiment(database, appkey)
    move(database, row_id, "CREATE_FAILED", reason="no capacity")
    move(database, row_id, "CREATE_REQUESTED")
    stored = load(database, row_id)
    assert (stored.status, stored.status_reason, stored.version) == (E.CREATE_REQUESTED, None, 3)


@pytest.mark.parametrize(
    ("start", "target"),
    [
        (E.CREATE_REQUESTED, E.CREATE_REQUESTED),
        (E.ACTIVE, E.CREATE_IN_PROGRESS),
        (E.CREATE_IN_PROGRESS, E.CREATE_REQUESTED),
        (E.CREATE_REQUESTED, "NOT_A_STATUS"),
    ],
)
def test_a_disallowed_transition_raises_and_writes_nothing(
    database: Database, appkey: str, start: str, target: str
) -> None:
    row_id = insert_experiment(database, appkey, status=start)
    with pytest.raises(InvalidTransition), database.session() as session:
        row = fetch(session, row_id)
        set_status(session, row, states.EXPERIMENT, target, reason="should not stick")
    stored = load(database, row_id)
    assert (stored.status, stored.status_reason, stored.version) == (start, None, 1)


@pytest.mark.parametrize(
    ("target", "error"),
    [(E.CREATE_FAILED, StaleStateError), (E.CREATE_IN_PROGRESS, InvalidTransition)],
)
def test_a_stale_row_object_raises_and_writes_nothing(
    database: Database, appkey: str, target: str, error: type[Exception]
) -> None:
    row_id = insert_experiment(database, appkey)
    with pytest.raises(error), database.session() as session:
        stale = fetch(session, row_id)
        move(database, row_id, "CREATE_IN_PROGRESS", reason="someone else")
        set_status(session, stale, states.EXPERIMENT, target, reason="mine")
    stored = load(database, row_id)
    assert stored.status == E.CREATE_IN_PROGRESS
    assert stored.status_reason == "someone else"
    assert stored.version == 2


def test_a_transition_of_a_deleted_row_raises_not_found(database: Database, appkey: str) -> None:
    row_id = insert_experiment(database, appkey)
    with pytest.raises(NotFoundError), database.session() as session:
        stale = fetch(session, row_id)
        with database.session() as other:
            other.delete(fetch(other, row_id))
        set_status(session, stale, states.EXPERIMENT, "CREATE_IN_PROGRESS")


@pytest.mark.parametrize("target", [E.ACTIVE, E.CREATE_IN_PROGRESS])
def test_of_eight_writers_racing_from_one_loaded_state_exactly_one_wins(
    database: Database, appkey: str, target: str
) -> None:
    row_id = insert_experiment(database, appkey)
    loaded = threading.Barrier(WORKERS)

    def contend(index: int) -> str:
        with database.session() as session:
            row = fetch(session, row_id)
            assert row.version == 1
            loaded.wait(timeout=30)
            set_status(session, row, states.EXPERIMENT, target, reason=f"writer {index}")
        return f"writer {index}"

    outcomes = race(WORKERS, contend)
    winners = [o for o in outcomes if isinstance(o, str)]
    losers = [o for o in outcomes if not isinstance(o, str)]
    assert len(winners) == 1
    assert all(isinstance(o, InvalidTransition | StaleStateError) for o in losers), losers
    stored = load(database, row_id)
    assert (stored.status, stored.status_reason, stored.version) == (target, winners[0], 2)


def test_concurrent_chains_of_transitions_with_retries_lose_no_update(
    database: Database, appkey: str
) -> None:
    # REQUESTED -> FAILED -> REQUESTED loops: each writer completes two full laps.
    row_id = insert_experiment(database, appkey)
    laps = 2
    successes = [0] * WORKERS

    def step(index: int) -> None:
        while True:
            with database.session() as session:
                row = fetch(session, row_id)
                target = (
                    E.CREATE_FAILED if row.status == E.CREATE_REQUESTED else E.CREATE_REQUESTED
                )
                try:
                    set_status(session, row, states.EXPERIMENT, target, reason=f"w{index}")
                except (StaleStateError, InvalidTransition):
                    continue
            successes[index] += 1
            return

    def chain(index: int) -> None:
        for _ in range(2 * laps):
            step(index)

    assert [o for o in race(WORKERS, chain) if o is not None] == []
    stored = load(database, row_id)
    assert sum(successes) == WORKERS * 2 * laps
    assert stored.version == 1 + sum(successes)
    assert stored.status == E.CREATE_REQUESTED  # an even number of flips


def create_counter(database: Database, appkey: str) -> tuple[str, int]:
    with database.session() as session:
        created = ExperimentService(session, appkey).create(
            ExperimentCreate(experiment_name="counter", description="0")
        )
    return created.experiment_id, load(database, created.experiment_id).version


def test_an_experiment_update_that_lost_a_race_raises_and_keeps_the_other_write(
    database: Database, appkey: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    row_id, start_version = create_counter(database, appkey)
    check_name = ExperimentService._ensure_name_free

    def meanwhile(service: ExperimentService, name: str) -> None:
        # Runs between update()'s read and its write: another request updates the row.
        with database.session() as other:
            ExperimentService(other, appkey).update(row_id, ExperimentUpdate(description="other"))
        check_name(service, name)

    monkeypatch.setattr(ExperimentService, "_ensure_name_free", meanwhile)
    with pytest.raises(StaleStateError), database.session() as session:
        ExperimentService(session, appkey).update(
            row_id, ExperimentUpdate(experiment_name="renamed", description="mine")
        )
    stored = load(database, row_id)
    assert (stored.name, stored.description) == ("counter", "other")
    assert stored.version == start_version + 1


def test_concurrent_experiment_updates_with_retries_lose_no_update(
    database: Database, appkey: str
) -> None:
    row_id, start_version = create_counter(database, appkey)
    increments = 3

    def increment() -> None:
        while True:
            try:
                with database.session() as session:
                    # Holding the row keeps it in the identity map: update() then compares
                    # against the version this increment was computed from.
                    row = fetch(session, row_id)
                    update = ExperimentUpdate(description=str(int(row.description or "0") + 1))
                    ExperimentService(session, appkey).update(row_id, update)
                return
            except StaleStateError:
                continue

    def chain(_index: int) -> None:
        for _ in range(increments):
            increment()

    assert [o for o in race(WORKERS, chain) if o is not None] == []
    stored = load(database, row_id)
    writes = WORKERS * increments
    assert stored.description == str(writes)
    assert stored.version == start_version + writes


def test_timestamps_round_trip_as_naive_utc(database: Database, appkey: str) -> None:
    before = utc_now()
    with database.session() as session:
        created = ExperimentService(session, appkey).create(
            ExperimentCreate(experiment_name="clock")
        )
    with database.session() as session:
        fetched = ExperimentService(session, appkey).get(created.experiment_id)
    assert fetched.created_datetime.tzinfo is None
    assert fetched.created_datetime == created.created_datetime
    assert fetched.updated_datetime == created.updated_datetime
    assert before <= fetched.created_datetime <= utc_now() + timedelta(seconds=1)
    assert fetched.model_dump(mode="json", by_alias=True) == created.model_dump(
        mode="json", by_alias=True
    )
    wire = fetched.model_dump(mode="json", by_alias=True)["createdDatetime"]
    assert wire.endswith("+00:00") and len(wire) == len("2024-01-01T00:00:00.000+00:00")


def test_an_exact_timestamp_is_stored_to_the_microsecond(database: Database, appkey: str) -> None:
    row_id = insert_experiment(database, appkey)
    stamp = datetime(1999, 12, 31, 23, 59, 59, 999999)
    with database.session() as session:
        fetch(session, row_id).created_at = stamp
    stored = load(database, row_id)
    assert stored.created_at == stamp
    assert stored.created_at.tzinfo is None
