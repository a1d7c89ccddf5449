"""The migrations build exactly the schema the models describe, on every backend."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from chalicelib.store.db import Database
from chalicelib.store.migrate import alembic_config, upgrade
from chalicelib.store.models import Base
from tests.conftest import PG_ADMIN_URL
from tests.contract.conftest import race


def upgrade_in_child(url: str, start: Any, errors: Any) -> None:
    """A freshly started server: its own engine, then the migration on start."""
    database = Database(url)
    try:
        start.wait(timeout=30)
        upgrade(database)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        errors.put(f"{type(exc).__name__}: {exc}")
    finally:
        database.dispose()


def schema_diff(database: Database) -> list[Any]:
    with database.engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


def current_revision(database: Database) -> str | None:
    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(database: Database) -> str | None:
    return ScriptDirectory.from_config(alembic_config(database)).get_current_head()


@pytest.fixture
def fresh_url(database: Database, tmp_path: Path) -> Iterator[str]:
    """An empty, never-migrated database on the same backend as ``database``."""
    if database.is_sqlite:
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"openmaker_fresh_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_migrated_schema_equals_the_models(database: Database) -> None:
    assert schema_diff(database) == []


def test_the_database_is_at_the_head_revision(database: Database) -> None:
    head = head_revision(database)
    assert head is not None
    assert current_revision(database) == head


def test_upgrading_twice_changes_nothing(database: Database) -> None:
    upgrade(database)
    upgrade(database)
    assert current_revision(database) == head_revision(database)
    assert schema_diff(database) == []


def test_four_processes_starting_at_once_migrate_a_fresh_database_once(
    database: Database, fresh_url: str
) -> None:
    # fork: the children skip the imports; no pooled connection may cross into them.
    database.dispose()
    context = multiprocessing.get_context("fork")
    start, errors = context.Barrier(4), context.Queue()
    children = [
        context.Process(target=upgrade_in_child, args=(fresh_url, start, errors)) for _ in range(4)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=60)
    assert [child.exitcode for child in children] == [0, 0, 0, 0]
    assert [errors.get() for _ in range(errors.qsize())] == []
    migrated = Database(fresh_url)
    try:
        assert current_revision(migrated) == head_revision(migrated)
        assert schema_diff(migrated) == []
    finally:
        migrated.dispose()


def test_four_threads_upgrading_at_once_migrate_a_fresh_database_once(fresh_url: str) -> None:
    databases = [Database(fresh_url) for _ in range(4)]
    try:
        outcomes = race(4, lambda i: upgrade(databases[i]))
        assert [o for o in outcomes if isinstance(o, BaseException)] == []
        assert current_revision(databases[0]) == head_revision(databases[0])
        assert schema_diff(databases[0]) == []
    finally:
        for database in databases:
            database.dispose()
