"""Helpers shared by the contract suite; every test runs once per metadata-store backend."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from chalicelib.domain import states
from chalicelib.services.auth import create_project
from chalicelib.store import models
from chalicelib.store.db import Database

T = TypeVar("T")


@pytest.fixture
def appkey(database: Database) -> str:
    """A project (tenant) on the backend under test."""
    return create_project(database, name="contract")


def insert_experiment(
    database: Database,
    appkey: str,
    *,
    name: str | None = None,
    status: str = str(states.ExperimentStatus.CREATE_REQUESTED),
) -> str:
    """Write an experiment row directly, skipping the service (which activates it at once)."""
    row_id = str(uuid.uuid4())
    with database.session() as session:
        session.add(
            models.Experiment(
                id=row_id, appkey=appkey, name=name or f"exp-{row_id[:8]}", status=status
            )
        )
    return row_id


def race(workers: int, work: Callable[[int], T]) -> list[T | BaseException]:
    """Run ``work(i)`` in ``workers`` threads released together; results or raised errors."""
    barrier = threading.Barrier(workers)

    def run(index: int) -> T | BaseException:
        barrier.wait(timeout=30)
        try:
            return work(index)
        except Exception as exc:  # noqa: BLE001 - the caller inspects every outcome
            return exc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, range(workers)))
