"""A PostgreSQL server that drops our connections (a restart) costs no failed read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from chalicelib.store.db import Database, get_database
from openmaker.server import ChaliceWSGI
from tests.conftest import _reset_caches
from tests.integration.conftest import ApiClient, new_tenant

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_database(
    postgres_url: str, openmaker_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Database]:
    monkeypatch.setenv("OPENMAKER_DATABASE_URL", postgres_url)
    _reset_caches()
    yield get_database()
    _reset_caches()


def _drop_server_side_connections(url: str) -> int:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return len(rows)


def test_reads_survive_the_database_dropping_every_pooled_connection(
    wsgi: ChaliceWSGI, pg_database: Database, postgres_url: str
) -> None:
    appkey, token = new_tenant(pg_database, "reconnect")
    api = ApiClient(wsgi, appkey, token)
    created = api.post("/experiments", {"experimentName": "still-there"})
    assert created.status == 201, created.body
    experiment_id = created.body["experiment"]["experimentId"]
    assert api.get(f"/experiments/{experiment_id}").status == 200  # a pooled connection

    assert _drop_server_side_connections(postgres_url) >= 1
    again = api.get(f"/experiments/{experiment_id}")
    assert again.status == 200, again.body
    assert again.body["experiment"]["experimentName"] == "still-there"
    assert api.post("/experiments", {"experimentName": "after"}).status == 201
