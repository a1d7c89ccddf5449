"""Schema migrations with Alembic, applied by the app on start."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from chalicelib.store.db import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_PG_LOCK_ID = 0x0E4A_C0DE  # serializes concurrent starts on PostgreSQL
# Alembic's ``context`` and ``op`` proxies are module globals: one upgrade per process at a time.
_IN_PROCESS = threading.Lock()


def alembic_config(database: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database.url.replace("%", "%%"))
    return config


def upgrade(database: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to call from several processes at once."""
    config = alembic_config(database)
    with _IN_PROCESS, database.engine.begin() as connection:
        if database.is_sqlite:
            # Take the write lock before alembic reads alembic_version; pysqlite would otherwise
            # run the DDL outside any transaction and two processes would both create tables.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
