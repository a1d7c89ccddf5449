"""Fixtures and helpers of the training suites: a fake Ray, allowed file roots, valid bodies.

A test module binds the fixtures it uses to module names (``ray = trainings_fixtures.ray``),
so pytest finds them without a change to the shared conftest files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from chalicelib.config import reset_settings
from chalicelib.dispatch import (
    BackendUnavailableError,
    JobSubmission,
    NodeCapacity,
    set_backend,
)
from chalicelib.dispatch.fake import FakeBackend
from chalicelib.domain.catalog import Flavor
from chalicelib.domain.common import utc_now
from chalicelib.services import runner_auth
from chalicelib.services.catalog import get_catalog
from chalicelib.store import models
from chalicelib.store.db import Database

GIB = 2**30
CPU_TRAINING_IMAGE = "Ubuntu 22.04 CPU PyTorch Training"
ONE_CPU = "m2.c1m2"
FOUR_CPU = "m2.c4m8"


def flavor(name: str) -> Flavor:
    """A catalog flavor by its name (ids are opaque; names are what people choose)."""
    return next(f for f in get_catalog().flavors if f.name == name)


def image_id(name: str) -> str:
    return next(i.image_id for i in get_catalog().images if i.image_name == name)


def one_node(cpus: float, memory_gib: float = 64, gpus: float = 0) -> list[NodeCapacity]:
    return [NodeCapacity("node-0", cpus=cpus, memory_bytes=memory_gib * GIB, gpus=gpus)]


class UnreachableBackend(FakeBackend):
    """A Ray that lists its nodes but whose job submission fails: dispatch never happens."""

    def submit(self, job: JobSubmission) -> None:
        self.submit_calls += 1
        raise BackendUnavailableError("Ray Jobs API unreachable (test)")


@pytest.fixture
def file_root(
    openmaker_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """``file://`` URIs are allowed below ``tmp_path`` only (so ``/etc`` is refused)."""
    monkeypatch.setenv("OPENMAKER_FILE_ROOTS", str(tmp_path))
    monkeypatch.delenv("OPENMAKER_NAS_ROOTS", raising=False)
    reset_settings()
    yield tmp_path
    reset_settings()


Installer = Callable[[FakeBackend], FakeBackend]


@pytest.fixture
def use_backend() -> Iterator[Installer]:
    """Install a backend for the test (``use_backend(FakeBackend(...))``); restored after."""

    def install(backend: FakeBackend) -> FakeBackend:
        set_backend(backend)
        return backend

    yield install
    set_backend(None)


@pytest.fixture
def ray(use_backend: Installer) -> FakeBackend:
    """A fake Ray cluster with one 8-CPU, 32 GiB node."""
    return use_backend(FakeBackend())


@dataclass(frozen=True)
class Bodies:
    """Valid ``POST /trainings`` bodies whose URIs lie below the allowed root."""

    root: Path

    def uri(self, relative: str) -> str:
        return f"file://{self.root}/{relative}"

    def own_code(self, name: str, **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "trainingName": name,
            "experimentName": "experiment",
            "imageId": image_id(CPU_TRAINING_IMAGE),
            "flavorId": flavor(ONE_CPU).id,
            "sourceDirUri": self.uri("code/mnist"),
            "entryPoint": "train.py",
            "modelUploadUri": self.uri(f"models/{name}"),
            "hyperparameterList": [{"parameterName": "epochs", "parameterValue": "2"}],
            "datasetList": [{"datasetName": "train", "dataUri": self.uri("data/train")}],
            "timeoutMinutes": 60,
        }
        body.update(overrides)
        return {k: v for k, v in body.items() if v is not None}


@pytest.fixture
def bodies(file_root: Path) -> Bodies:
    return Bodies(file_root)


def runner_headers(training_id: str) -> dict[str, str]:
    return {runner_auth.HEADER: runner_auth.job_token("training", training_id)}


def count_trainings(database: Database) -> int:
    with database.session(read_only=True) as session:
        return int(session.scalar(select(func.count()).select_from(models.Training)) or 0)


@dataclass(frozen=True)
class TrainingRow:
    status: str
    status_reason: str | None
    version: int
    dispatched_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None


def training_row(database: Database, training_id: str) -> TrainingRow | None:
    with database.session(read_only=True) as session:
        row = session.get(models.Training, training_id)
        if row is None:
            return None
        return TrainingRow(
            row.status,
            row.status_reason,
            row.version,
            row.dispatched_at,
            row.started_at,
            row.ended_at,
        )


def backdate(database: Database, training_id: str, **ages: timedelta) -> None:
    """Move timestamps into the past: ``backdate(db, id, created_at=timedelta(minutes=5))``."""
    now = utc_now()
    with database.session() as session:
        session.execute(
            update(models.Training)
            .where(models.Training.id == training_id)
            .values({column: now - age for column, age in ages.items()})
        )
