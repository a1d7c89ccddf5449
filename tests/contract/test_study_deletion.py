"""A deleted tuning's Optuna study goes with it (both backends): the control plane deletes it
with SQLAlchemy Core on Optuna's own tables, and these tests check it with Optuna itself."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import psycopg
import pytest
from optuna.storages import RDBStorage
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from chalicelib.store.studies import (
    OPTUNA_SCHEMA,
    delete_study,
    normalize_url,
    optuna_storage_url,
)
from tests.conftest import PG_ADMIN_URL

# Optuna's tables, listed here on their own so that a table the delete forgets shows.
TRIAL_TABLES = (
    "trial_params",
    "trial_values",
    "trial_intermediate_values",
    "trial_user_attributes",
    "trial_system_attributes",
    "trial_heartbeats",
)
STUDY_TABLES = ("study_directions", "study_user_attributes", "study_system_attributes")

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings(
    "ignore::optuna.exceptions.ExperimentalWarning",  # heartbeat_interval
    "ignore:Heartbeat of storage:UserWarning",  # recorded by hand, not by Study.optimize
)


def open_storage(backend_url: str) -> RDBStorage:
    """Optuna's storage beside the platform database, as the tuning driver opens it."""
    url, kwargs = optuna_storage_url(backend_url)
    if make_url(url).get_backend_name() == "postgresql":
        engine = create_engine(url, poolclass=NullPool)
        with engine.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{OPTUNA_SCHEMA}"'))
        engine.dispose()
    return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=60)


@pytest.fixture
def storage(backend_url: str) -> Iterator[RDBStorage]:
    opened = open_storage(backend_url)
    yield opened
    opened.engine.dispose()


def fill_study(storage: RDBStorage, name: str) -> optuna.Study:
    """A study with a row in every table Optuna has: directions, attributes, trials with
    params, values, intermediate values, attributes and a heartbeat."""
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr("strategy", "RANDOM")
    storage.set_study_system_attr(study._study_id, "seed", 7)
    for number in range(3):
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_categorical("optimizer", ["sgd", "adam"])
        trial.report(0.5 + number / 10, step=1)
        trial.set_user_attr("trialId", f"{name}-{number}")
        storage.set_trial_system_attr(trial._trial_id, "index", number)
        storage.record_heartbeat(trial._trial_id)
        if number < 2:
            study.tell(trial, 0.6 + number / 10)
    return study


def ids_of(study: optuna.Study) -> tuple[int, list[int]]:
    """The study's id and its trials' ids, taken while it exists."""
    return study._study_id, [t._trial_id for t in study.get_trials()]


def rows_of(storage: RDBStorage, ids: tuple[int, list[int]]) -> dict[str, int]:
    """How many rows of each Optuna table belong to a study (its trials named by id, so rows
    a delete orphaned still count)."""
    study_id, trial_ids = ids
    listed = ", ".join(str(i) for i in trial_ids) or "-1"
    counts: dict[str, int] = {}
    with storage.engine.connect() as connection:
        for table in TRIAL_TABLES:
            query = f"SELECT count(*) FROM {table} WHERE trial_id IN ({listed})"
            counts[table] = int(connection.execute(text(query)).scalar_one())
        for table in ("trials", *STUDY_TABLES, "studies"):
            query = f"SELECT count(*) FROM {table} WHERE study_id = :id"
            counts[table] = int(connection.execute(text(query), {"id": study_id}).scalar_one())
    return counts


def summary(study: optuna.Study) -> list[tuple[Any, ...]]:
    return [
        (t.number, t.state.name, t.value, t.params, t.intermediate_values, t.user_attrs)
        for t in study.get_trials()
    ]


def test_optuna_has_exactly_the_tables_the_delete_knows(storage: RDBStorage) -> None:
    schema = OPTUNA_SCHEMA if storage.engine.dialect.name == "postgresql" else None
    tables = set(inspect(storage.engine).get_table_names(schema=schema))

    assert tables - {"alembic_version", "version_info"} == {
        *TRIAL_TABLES,
        "trials",
        *STUDY_TABLES,
        "studies",
    }


def test_deleting_one_study_removes_all_its_rows_and_leaves_the_other_loadable(
    backend_url: str, storage: RDBStorage
) -> None:
    doomed = fill_study(storage, f"tuning-{uuid.uuid4()}")
    kept = fill_study(storage, f"tuning-{uuid.uuid4()}")
    doomed_ids, kept_ids = ids_of(doomed), ids_of(kept)
    doomed_rows, kept_rows = rows_of(storage, doomed_ids), rows_of(storage, kept_ids)
    kept_before = summary(kept)

    assert all(doomed_rows.values()), doomed_rows  # every table had something to delete
    assert delete_study(backend_url, doomed.study_name) is True

    assert set(rows_of(storage, doomed_ids).values()) == {0}
    assert doomed.study_name not in optuna.get_all_study_names(storage)
    assert rows_of(storage, kept_ids) == kept_rows
    reloaded = optuna.load_study(study_name=kept.study_name, storage=storage)
    assert summary(reloaded) == kept_before
    assert reloaded.user_attrs == {"strategy": "RANDOM"}
    assert reloaded.best_value == pytest.approx(0.7)
    reloaded.tell(reloaded.ask(), 0.9)  # still a working study
    assert len(reloaded.get_trials()) == 4


def test_a_study_of_that_name_can_be_made_again_after_the_delete(
    backend_url: str, storage: RDBStorage
) -> None:
    name = f"tuning-{uuid.uuid4()}"
    fill_study(storage, name)

    assert delete_study(backend_url, name) is True
    assert delete_study(backend_url, name) is False
    again = optuna.create_study(study_name=name, storage=storage)
    assert again.get_trials() == []


def test_an_unknown_study_is_no_error_and_deletes_nothing(
    backend_url: str, storage: RDBStorage
) -> None:
    kept = fill_study(storage, f"tuning-{uuid.uuid4()}")
    rows = rows_of(storage, ids_of(kept))

    assert delete_study(backend_url, f"tuning-{uuid.uuid4()}") is False
    assert rows_of(storage, ids_of(kept)) == rows


# --- storage that was never made --------------------------------------------------------


@pytest.fixture
def fresh_postgres() -> Iterator[str]:
    """A PostgreSQL database of its own: the session's database has the schema already."""
    name = f"openmaker_studies_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_without_the_sqlite_file_there_is_no_study_and_no_file_is_made(tmp_path: Path) -> None:
    platform = tmp_path / "openmaker.db"

    assert delete_study(f"sqlite:///{platform}", "tuning-1") is False
    assert list(tmp_path.iterdir()) == []


@pytest.mark.postgres
def test_without_the_optuna_schema_there_is_no_study_and_no_schema_is_made(
    fresh_postgres: str,
) -> None:
    assert delete_study(fresh_postgres, "tuning-1") is False

    engine = create_engine(normalize_url(fresh_postgres), poolclass=NullPool)
    try:
        schemas = inspect(engine).get_schema_names()
    finally:
        engine.dispose()
    assert OPTUNA_SCHEMA not in schemas


def test_an_sqlite_file_without_optuna_tables_has_no_study(tmp_path: Path) -> None:
    platform = tmp_path / "openmaker.db"
    sibling = Path(str(make_url(optuna_storage_url(f"sqlite:///{platform}")[0]).database))
    sibling.touch()

    assert delete_study(f"sqlite:///{platform}", "tuning-1") is False
    assert sibling.read_bytes() == b""
