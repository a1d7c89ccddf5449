"""Engine and sessions for the metadata store: SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from chalicelib.config import get_settings


def normalize_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` URLs (SQLAlchemy would pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _enable_wal(cursor: Any, attempts: int = 100) -> None:
    """Switch to WAL. While another process switches a new file, SQLite answers "database is
    locked" or "disk I/O error" at once (no busy wait), so retry for up to about two seconds."""
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.02)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    _enable_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False}, pool_size=16, max_overflow=16
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping: it costs a round trip per request (a third of a GET here). A connection
    # broken by a server restart fails one request, and SQLAlchemy then drops the whole pool.
    return create_engine(url, pool_size=8, max_overflow=8, pool_recycle=1800)


class Database:
    """One engine and its session factory; ``session()`` is a unit of work."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Reads on PostgreSQL run in autocommit: one round trip instead of BEGIN, SELECT and
        # ROLLBACK. Each statement still sees a consistent snapshot of its own.
        reader = (
            self.engine
            if self.is_sqlite
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self._read_sessions = sessionmaker(reader, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @contextmanager
    def session(self, *, read_only: bool = False) -> Iterator[Session]:
        """A unit of work, committed on success. ``read_only`` skips the commit (the
        transaction is just closed), which is all a GET needs."""
        session = self._read_sessions() if read_only else self._sessions()
        try:
            yield session
            if not read_only:
                session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


_database: Database | None = None
_lock = threading.Lock()


def get_database() -> Database:
    """The process-wide database, migrated to the newest schema on first use."""
    global _database
    if _database is None:
        with _lock:
            if _database is None:
                from chalicelib.store.migrate import upgrade

                database = Database(get_settings().database_url)
                upgrade(database)
                _database = database
    return _database


def reset_database() -> None:
    """Drop the process-wide database (tests switch URLs between cases)."""
    global _database
    with _lock:
        if _database is not None:
            _database.dispose()
        _database = None
