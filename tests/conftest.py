"""Fixtures shared by every test layer: an isolated OpenMaker home and fresh databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from chalicelib.config import reset_settings
from chalicelib.services.catalog import get_catalog
from chalicelib.store.db import Database, get_database, reset_database
from chalicelib.store.models import Base

PG_ADMIN_URL = os.environ.get(
    "OPENMAKER_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _reset_caches() -> None:
    reset_settings()
    reset_database()
    get_catalog.cache_clear()


@pytest.fixture
def openmaker_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh $OPENMAKER_HOME (SQLite database and local storage inside it)."""
    home = tmp_path / "openmaker-home"
    monkeypatch.setenv("OPENMAKER_HOME", str(home))
    monkeypatch.delenv("OPENMAKER_DATABASE_URL", raising=False)
    _reset_caches()
    yield home
    _reset_caches()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database created for this test run and dropped after it."""
    import psycopg

    name = f"openmaker_test_{uuid.uuid4().hex[:12]}"
    admin = PG_ADMIN_URL
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL on loopback is required for contract tests: {exc}")
    yield admin.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _truncate_all(database: Database) -> None:
    with database.engine.begin() as connection:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {tables} CASCADE"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test once on SQLite (a new file) and once on PostgreSQL (emptied)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'contract.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def database(
    backend_url: str, openmaker_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Database]:
    """The process-wide database on the chosen backend, migrated and empty."""
    monkeypatch.setenv("OPENMAKER_DATABASE_URL", backend_url)
    _reset_caches()
    database = get_database()
    if not database.is_sqlite:
        _truncate_all(database)
    yield database
    _reset_caches()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of a moto S3 server on loopback, shared by the whole run."""
    from tests.s3server import start_moto_server

    endpoint, stop = start_moto_server()
    yield endpoint
    stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new, empty bucket on the moto server, with the environment pointing s3:// at it."""
    import boto3

    from chalicelib.objectstore.s3 import reset_clients

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "OPENMAKER_S3_ENDPOINT_URL": s3_endpoint,
        "OPENMAKER_OBS_INSECURE": "1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    reset_settings()
    reset_clients()  # clients cache the credentials they were made with
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    boto3.session.Session().client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    yield bucket
    monkeypatch.undo()  # restore the environment first, so the next settings read sees it
    reset_settings()
    reset_clients()


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One local Ray head (Jobs API) for the whole test session; its dashboard URL.

    Platforms started by the tests use it through ``OPENMAKER_TEST_RAY_ADDRESS`` instead of
    starting a head each (about 5 s apiece). 4 logical CPUs let a few jobs run side by side.
    """
    from openmaker.rayhead import RayHead

    # Job drivers take object-store credentials from the nodes' environment (never from the
    # job submission): the moto S3 server of the tests accepts these.
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)
    head = RayHead(tmp_path_factory.mktemp("ray-head"), num_cpus=4)
    url = head.start()
    os.environ["OPENMAKER_TEST_RAY_ADDRESS"] = url
    yield url
    os.environ.pop("OPENMAKER_TEST_RAY_ADDRESS", None)
    head.stop()
