"""Where the Optuna studies of hyperparameter tunings live, next to the platform's database
but never in its tables (the control plane tells the tuning driver; it imports no Optuna),
and how a deleted tuning's study goes (at once, or later by the sweep of studies whose tuning
is gone)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    inspect,
    select,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import NullPool

OPTUNA_SCHEMA = "optuna"  # PostgreSQL: Optuna's tables (and its alembic_version) live here


def normalize_url(url: str) -> str:
    """psycopg 3 for ``postgresql://`` URLs, as the platform's own engine does."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def optuna_storage_url(database_url: str) -> tuple[str, dict[str, Any]]:
    """Where the Optuna studies of the platform on ``database_url`` live: URL and engine kwargs.

    Optuna creates its own tables and its own ``alembic_version``, which must never meet the
    platform's. SQLite: a sibling file (``openmaker.db`` -> ``openmaker-optuna.db``).
    PostgreSQL: the same database, schema ``optuna`` (``open_storage`` creates it).
    """
    url = make_url(normalize_url(database_url))
    backend = url.get_backend_name()
    if backend == "sqlite":
        database = url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            raise ValueError("Optuna studies need an SQLite database file, not an in-memory one")
        path = Path(database)
        sibling = path.with_name(f"{path.stem}-optuna{path.suffix}")
        rendered = url.set(database=str(sibling)).render_as_string(hide_password=False)
        return rendered, {"connect_args": {"timeout": 30.0}}
    if backend == "postgresql":
        rendered = url.render_as_string(hide_password=False)
        return rendered, {
            "connect_args": {"options": f"-csearch_path={OPTUNA_SCHEMA}"},
            "pool_pre_ping": True,
        }
    raise ValueError(f"no Optuna storage for a {backend!r} database (SQLite or PostgreSQL)")


# Optuna's tables (optuna/storages/_rdb/models.py), children before their parents; one that an
# older Optuna schema lacks is skipped.
TRIAL_CHILDREN = (
    "trial_params",
    "trial_values",
    "trial_intermediate_values",
    "trial_user_attributes",
    "trial_system_attributes",
    "trial_heartbeats",
)
STUDY_CHILDREN = ("study_directions", "study_user_attributes", "study_system_attributes")


def _optuna_tables(schema: str | None) -> dict[str, Table]:
    """Just the columns a delete needs: ids and the study's name."""
    metadata = MetaData(schema=schema)
    tables = {
        "studies": Table(
            "studies", metadata, Column("study_id", Integer), Column("study_name", String)
        ),
        "trials": Table(
            "trials", metadata, Column("trial_id", Integer), Column("study_id", Integer)
        ),
    }
    for name in TRIAL_CHILDREN:
        tables[name] = Table(name, metadata, Column("trial_id", Integer))
    for name in STUDY_CHILDREN:
        tables[name] = Table(name, metadata, Column("study_id", Integer))
    return tables


@contextmanager
def _optuna_tables_of(
    database_url: str,
) -> Iterator[tuple[Connection | None, set[str], str | None]]:
    """A transaction on the Optuna storage of the platform on ``database_url``, the names of
    its tables and its schema. A storage never made (the SQLite file or the PostgreSQL schema
    is missing) has no connection and no tables, and nothing is created to find that out."""
    url, engine_kwargs = optuna_storage_url(database_url)
    parsed = make_url(url)
    postgresql = parsed.get_backend_name() == "postgresql"
    schema = OPTUNA_SCHEMA if postgresql else None
    if not postgresql and not Path(str(parsed.database)).is_file():
        yield None, set(), schema  # connecting would create the file
        return
    engine = create_engine(url, poolclass=NullPool, **engine_kwargs)
    try:
        with engine.begin() as connection:
            present = set(inspect(connection).get_table_names(schema=schema))
            yield connection, present, schema
    finally:
        engine.dispose()


def delete_study(database_url: str, study_name: str) -> bool:
    """Delete the Optuna study ``study_name`` of the platform on ``database_url``.

    Runs SQLAlchemy Core against Optuna's own tables, children first, in one transaction, so
    the control plane needs no Optuna. Storage that was never made (no tuning ever ran)
    means there is no study.

    Returns:
        True when the study was there and is gone; False when there was no such study.
    """
    with _optuna_tables_of(database_url) as (connection, present, schema):
        if connection is None or not {"studies", "trials"} <= present:
            return False
        return _delete_rows(connection, _optuna_tables(schema), present, study_name)


def study_names(database_url: str) -> list[str]:
    """The names of every Optuna study of the platform on ``database_url``, sorted."""
    with _optuna_tables_of(database_url) as (connection, present, schema):
        if connection is None or "studies" not in present:
            return []
        studies = _optuna_tables(schema)["studies"]
        return sorted(str(name) for name in connection.scalars(select(studies.c.study_name)))


def _delete_rows(
    connection: Connection, tables: dict[str, Table], present: set[str], study_name: str
) -> bool:
    studies, trials = tables["studies"], tables["trials"]
    study_id = connection.scalar(
        select(studies.c.study_id).where(studies.c.study_name == study_name)
    )
    if study_id is None:
        return False
    trial_ids = select(trials.c.trial_id).where(trials.c.study_id == study_id)
    for name in TRIAL_CHILDREN:
        if name in present:
            table = tables[name]
            connection.execute(delete(table).where(table.c.trial_id.in_(trial_ids)))
    connection.execute(delete(trials).where(trials.c.study_id == study_id))
    for name in STUDY_CHILDREN:
        if name in present:
            table = tables[name]
            connection.execute(delete(table).where(table.c.study_id == study_id))
    connection.execute(delete(studies).where(studies.c.study_id == study_id))
    return True
