"""What the API shows of hyperparameter tunings and their trials (the SDK's shapes)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from chalicelib.config import get_settings
from chalicelib.domain import states
from chalicelib.domain.common import utc_now
from chalicelib.domain.tuning import (
    HyperparameterTuning,
    HyperparameterTuningSpec,
    ObjectiveType,
    StatusDetail,
    Trial,
)
from chalicelib.store import models

T = states.TrialStatus
SPEC_FIELDS = frozenset(HyperparameterTuningSpec.model_fields)
DETAILS = frozenset(str(d) for d in StatusDetail)


def board_path(tuning_id: str) -> str:
    """The path of the tuning's TensorBoard: one run per trial (``chalicelib.api.tensorboard``
    says which directories)."""
    return f"/tensorboard/hyperparameter-tunings/{tuning_id}/"


def trial_view(row: models.Trial) -> Trial:
    metrics = row.metrics or {}
    return Trial.model_validate(
        {
            "trial_id": row.id,
            "trial_name": f"trial-{row.number}",
            "trial_status_code": row.status,
            "status_reason": row.status_reason,
            "hyperparameter_tuning_id": row.tuning_id,
            "hyperparameter_list": [
                {"parameter_name": k, "parameter_value": str(v)} for k, v in row.params.items()
            ],
            "trial_metric_list": [
                {
                    "trial_metric_name": name,
                    "trial_metric_min_value": _text(values.get("min")),
                    "trial_metric_max_value": _text(values.get("max")),
                    "trial_metric_latest_value": _text(values.get("latest")),
                }
                for name, values in metrics.items()
            ],
            "objective_metric_value": row.objective_value,
            "elapsed_time_seconds": _elapsed(row),
            "started_datetime": row.started_at,
            "ended_datetime": row.ended_at,
            "created_datetime": row.created_at,
            "updated_datetime": row.updated_at,
        }
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _elapsed(row: Any) -> int | None:
    if row.started_at is None:
        return None
    end = row.ended_at or utc_now()
    return max(0, int((end - row.started_at).total_seconds()))


def _counts(session: Session, tuning_id: str) -> dict[str, int]:
    rows = session.execute(
        select(models.Trial.status, func.count())
        .where(models.Trial.tuning_id == tuning_id)
        .group_by(models.Trial.status)
    ).all()
    return {str(status): int(n) for status, n in rows}


def best_trial(session: Session, row: models.HyperparameterTuning) -> models.Trial | None:
    trial = models.Trial
    order = (
        trial.objective_value.desc()
        if row.spec.get("objective_type_code") == ObjectiveType.MAXIMIZE
        else trial.objective_value.asc()
    )
    found: models.Trial | None = session.scalars(
        select(trial)
        .where(
            trial.tuning_id == row.id,
            trial.status == str(T.SUCCEEDED),
            trial.objective_value.is_not(None),
        )
        .order_by(order, trial.number)
        .limit(1)
    ).first()
    return found


def to_view(
    session: Session, row: models.HyperparameterTuning, experiment_name: str | None
) -> HyperparameterTuning:
    spec = row.spec
    counts = _counts(session, row.id)
    best = best_trial(session, row)
    return HyperparameterTuning.model_validate(
        {
            **{name: spec[name] for name in SPEC_FIELDS if name in spec},
            "hyperparameter_tuning_id": row.id,
            "hyperparameter_tuning_name": row.name,
            "description": row.description,
            "hyperparameter_tuning_status_code": row.status,
            "hyperparameter_tuning_status_reason": row.status_reason,
            # a detail this version does not know (an old result file) is not shown
            "hyperparameter_tuning_status_detail": (
                row.status_detail if row.status_detail in DETAILS else None
            ),
            "experiment": {"experiment_id": row.experiment_id, "experiment_name": experiment_name},
            "experiment_id": row.experiment_id,
            "flavor": spec["flavor"],
            "image": spec["image"],
            "algorithm": spec.get("algorithm"),
            "boot_storage": {"storage_size": 50},
            "data_storage_list": [{"storage_size": spec.get("data_storage_size")}],
            "training_template_id": spec.get("training_template_id"),
            "warm_start_hyperparameter_tuning_id": spec.get("warm_start_hyperparameter_tuning_id"),
            "successful_trial_count": counts.get(str(T.SUCCEEDED), 0),
            "running_trial_count": counts.get(str(T.RUNNING), 0),
            "failed_trial_count": counts.get(str(T.FAILED), 0),
            "early_stopped_trial_count": counts.get(str(T.EARLY_STOPPED), 0),
            "killed_trial_count": counts.get(str(T.KILLED), 0),
            "metrics_unavailable_trial_count": counts.get(str(T.METRICS_UNAVAILABLE), 0),
            "optimal_trial_id": best.id if best else None,
            "optimal_trial": trial_view(best) if best else None,
            "tensorboard_access_uri": get_settings().public_url + board_path(row.id),
            "tensorboard_access_path": board_path(row.id),
            "log_and_crash_app_key": row.appkey if spec.get("use_log") else None,
            "elapsed_time_seconds": _elapsed(row),
            "started_datetime": row.started_at,
            "ended_datetime": row.ended_at,
            "tag_list": row.tags,
            "app_key": row.appkey,
            "created_datetime": row.created_at,
            "updated_datetime": row.updated_at,
        }
    )
