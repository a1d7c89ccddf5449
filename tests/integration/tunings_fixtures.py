"""Fixtures and helpers of the hyperparameter tuning suites: valid bodies (the SDK's shape),
the runner's signed headers and a read of a tuning's row.

Bind the fixtures a module uses to module names (``tuning_bodies =
tunings_fixtures.tuning_bodies``) next to those of ``trainings_fixtures``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from easymaker.api.request_body import HyperparameterTuningCreateBody
from easymaker.training.components import Dataset, HyperparameterSpec, Metric
from sqlalchemy import func, select

from chalicelib.services import runner_auth, tunings
from chalicelib.store import models
from chalicelib.store.db import Database
from tests.integration.trainings_fixtures import CPU_TRAINING_IMAGE, ONE_CPU, flavor, image_id

# The search space every default body explores (the SDK sends every value as a string).
LEARNING_RATE = {
    "hyperparameterName": "learning_rate",
    "hyperparameterTypeCode": "double",
    "hyperparameterMinValue": "0.001",
    "hyperparameterMaxValue": "0.1",
}
OPTIMIZER = {
    "hyperparameterName": "optimizer",
    "hyperparameterTypeCode": "categorical",
    "hyperparameterSpecifiedValues": "sgd,adam",
}


@dataclass(frozen=True)
class TuningBodies:
    """Valid ``POST /hyperparameter-tunings`` bodies whose URIs lie below the allowed root."""

    root: Path

    def uri(self, relative: str) -> str:
        return f"file://{self.root}/{relative}"

    def own_code(self, name: str, **overrides: Any) -> dict[str, Any]:
        """An own-code tuning: 2 parallel trials of 1 node, RANDOM, maximizing accuracy.

        An override of ``None`` drops the field.
        """
        body: dict[str, Any] = {
            "hyperparameterTuningName": name,
            "experimentName": "experiment",
            "imageId": image_id(CPU_TRAINING_IMAGE),
            "flavorId": flavor(ONE_CPU).id,
            "instanceCount": 2,
            "parallelTrialCount": 2,
            "sourceDirUri": self.uri("code/mnist"),
            "entryPoint": "train.py",
            "modelUploadUri": self.uri(f"models/{name}"),
            "datasetList": [{"datasetName": "train", "dataUri": self.uri("data/train")}],
            "timeoutMinutes": 60,
            "hyperparameterSpecList": [dict(LEARNING_RATE), dict(OPTIMIZER)],
            "metricList": [{"name": "accuracy"}, {"name": "loss"}],
            "objectiveMetric": {"name": "accuracy"},
            "objectiveTypeCode": "MAXIMIZE",
            "maxTrialCount": 4,
            "tuningStrategyName": "RANDOM",
        }
        body.update(overrides)
        return {k: v for k, v in body.items() if v is not None}

    def sdk(self, name: str, **overrides: Any) -> dict[str, Any]:
        """What ``easymaker.HyperparameterTuning().run(...)`` posts (the SDK's own model)."""
        values: dict[str, Any] = {
            "hyperparameter_tuning_name": name,
            "description": "learning rate and optimizer",
            "experiment_name": "experiment",
            "image_id": image_id(CPU_TRAINING_IMAGE),
            "flavor_id": flavor(ONE_CPU).id,
            "instance_count": 1 * 2,  # distributed_node_count x parallel_trial_count
            "parallel_trial_count": 2,
            "source_dir_uri": self.uri("code/mnist"),
            "entry_point": "train.py",
            "hyperparameter_spec_list": [
                HyperparameterSpec(
                    hyperparameter_name="learning_rate",
                    hyperparameter_type_code="double",
                    hyperparameter_min_value="0.001",
                    hyperparameter_max_value="0.1",
                ),
                HyperparameterSpec(
                    hyperparameter_name="optimizer",
                    hyperparameter_type_code="categorical",
                    hyperparameter_specified_values="sgd,adam",
                ),
            ],
            "dataset_list": [Dataset(dataset_name="train", data_uri=self.uri("data/train"))],
            "model_upload_uri": self.uri(f"models/{name}"),
            "timeout_minutes": 60,
            "use_log": False,
            "metric_list": [Metric(name="loss"), Metric(name="accuracy")],
            "metric_regex": None,
            "objective_metric": {"name": "accuracy"},
            "objective_type_code": "MAXIMIZE",
            "objective_goal": 0.99,
            "max_failed_trial_count": None,
            "max_trial_count": 6,
            "tuning_strategy_name": "BAYESIAN_OPTIMIZATION",
            "tuning_strategy_random_state": 7,
            "early_stopping_algorithm": "MEDIAN",
            "early_stopping_min_trial_count": 3,
            "early_stopping_start_step": 4,
            "use_torchrun": False,
            "nproc_per_node": 1,
        }
        values.update(overrides)
        body: dict[str, Any] = HyperparameterTuningCreateBody(**values).model_dump()
        return body


@pytest.fixture
def tuning_bodies(file_root: Path) -> TuningBodies:
    return TuningBodies(file_root)


def tuning_headers(tuning_id: str) -> dict[str, str]:
    """The tuning driver's signed header (its token is derived, never handed out)."""
    return {runner_auth.HEADER: runner_auth.job_token(tunings.RUNNER_KIND, tuning_id)}


def count_tunings(database: Database) -> int:
    with database.session(read_only=True) as session:
        model = models.HyperparameterTuning
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def count_trials(database: Database, tuning_id: str | None = None) -> int:
    with database.session(read_only=True) as session:
        stmt = select(func.count()).select_from(models.Trial)
        if tuning_id is not None:
            stmt = stmt.where(models.Trial.tuning_id == tuning_id)
        return int(session.scalar(stmt) or 0)


@dataclass(frozen=True)
class TuningRow:
    status: str
    status_reason: str | None
    status_detail: str | None
    version: int
    dispatched_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None


def tuning_row(database: Database, tuning_id: str) -> TuningRow | None:
    with database.session(read_only=True) as session:
        row = session.get(models.HyperparameterTuning, tuning_id)
        if row is None:
            return None
        return TuningRow(
            row.status,
            row.status_reason,
            row.status_detail,
            row.version,
            row.dispatched_at,
            row.started_at,
            row.ended_at,
        )
