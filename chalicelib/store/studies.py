"""Where the Optuna studies of hyperparameter tunings live, next to the platform's database
but never in its tables (the control plane tells the tuning driver; it imports no Optuna)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

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
