"""Hyperparameter tunings through the unmodified ``easymaker`` SDK on the session's Ray head."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests
from easymaker.training.components import HyperparameterSpec, Metric

from tests.e2e.conftest import RunningPlatform
from tests.e2e.test_sdk_trainings import CPU_IMAGE, _QuickSleep, experiment_id, source_dir, unique

__all__ = ["experiment_id"]  # the fixture, shared

ENDED = {"COMPLETE", "FAIL_HYPERPARAMETER_TUNING", "CREATE_FAILED", "STOPPED"}


def tuning(platform: RunningPlatform, tuning_id: str) -> dict[str, Any]:
    reply = requests.get(
        f"{platform.api_url}/hyperparameter-tunings/{tuning_id}",
        headers=platform.auth_headers,
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()["hyperparameterTuning"]
    return body


def trials(platform: RunningPlatform, tuning_id: str) -> list[dict[str, Any]]:
    reply = requests.get(
        f"{platform.api_url}/hyperparameter-tunings/{tuning_id}/trials",
        headers=platform.auth_headers,
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    found: list[dict[str, Any]] = reply.json()["trialList"]
    return found


def wait_tuning(
    platform: RunningPlatform, tuning_id: str, statuses: set[str], timeout: float = 240
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = tuning(platform, tuning_id)
        if body["hyperparameterTuningStatusCode"] in statuses:
            return body
        time.sleep(0.3)
    raise AssertionError(f"tuning {tuning_id} never reached {statuses}: {body}")


def x_spec(low: str, high: str, step: str | None = None) -> HyperparameterSpec:
    return HyperparameterSpec(
        hyperparameter_name="x",
        hyperparameter_type_code="double",
        hyperparameter_min_value=low,
        hyperparameter_max_value=high,
        hyperparameter_step=step,
    )


def run(sdk: Any, experiment_id: str, src: Path, out: Path, **kwargs: Any) -> Any:
    options: dict[str, Any] = {
        "hyperparameter_tuning_name": unique("tune"),
        "image_name": CPU_IMAGE,
        "instance_type_name": "m2.c1m2",
        "experiment_id": experiment_id,
        "source_dir_uri": f"file://{src}",
        "entry_point": "objective.py",
        "model_upload_uri": f"file://{out}",
        "metric_list": [Metric(name="loss"), Metric(name="accuracy")],
        "objective_metric_name": "loss",
        "objective_type_code": "MINIMIZE",
        "wait": False,
    }
    options.update(kwargs)
    return sdk.HyperparameterTuning().run(**options)


def test_a_grid_tuning_runs_every_point_and_keeps_the_best_model(
    sdk: Any,
    experiment_id: str,
    platform: RunningPlatform,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from easymaker.common.base_model import easymaker_base_model

    monkeypatch.setattr(easymaker_base_model, "time", _QuickSleep)
    src = source_dir(tmp_path, "objective.py")
    out = tmp_path / "models"
    done = run(
        sdk,
        experiment_id,
        src,
        out,
        hyperparameter_spec_list=[
            x_spec("1", "4", "1"),
            HyperparameterSpec(
                hyperparameter_name="optimizer",
                hyperparameter_type_code="categorical",
                hyperparameter_specified_values="adam,sgd",
            ),
        ],
        tuning_strategy_name="GRID",
        tuning_strategy_random_state=7,
        max_trial_count=20,
        parallel_trial_count=2,
        distributed_node_count=1,
        wait=True,
    )
    body = tuning(platform, done.hyperparameter_tuning_id)
    assert body["hyperparameterTuningStatusCode"] == "COMPLETE", body
    assert body["hyperparameterTuningStatusDetail"] == "SuggestionEndReached"
    assert body["successfulTrialCount"] == 8 and body["failedTrialCount"] == 0
    best = body["optimalTrial"]
    params = {p["parameterName"]: p["parameterValue"] for p in best["hyperparameterList"]}
    assert params == {"x": "3.0", "optimizer": "adam"}  # loss = 0 + 1/3 at the last step
    loss = next(m for m in best["trialMetricList"] if m["trialMetricName"] == "loss")
    assert float(loss["trialMetricLatestValue"]) == pytest.approx(1 / 3, abs=1e-4)
    assert float(loss["trialMetricMaxValue"]) == pytest.approx(1.0, abs=1e-4)
    listed = trials(platform, done.hyperparameter_tuning_id)
    assert len(listed) == 8 and {t["trialStatusCode"] for t in listed} == {"SUCCEEDED"}
    kept = sorted(p.parent.name for p in out.rglob("model.txt"))
    best_number = best["trialName"].split("-")[1]
    assert kept == [best_number]  # only the best trial's model directory is kept
    trial_log = requests.get(
        f"{platform.api_url}/hyperparameter-tunings/{done.hyperparameter_tuning_id}"
        f"/trials/{best['trialId']}/logs",
        params={"page": 1},
        headers=platform.auth_headers,
        timeout=10,
    ).json()["trialLog"]
    assert any(line["body"].startswith("epoch=3 loss=") for line in trial_log["logList"])
    driver_log = requests.get(
        f"{platform.api_url}/hyperparameter-tunings/{done.hyperparameter_tuning_id}/logs",
        params={"page": 1},
        headers=platform.auth_headers,
        timeout=10,
    ).json()["hyperparameterTuningLog"]
    assert any("SuggestionEndReached" in line["body"] for line in driver_log["logList"])
    sdk_view = sdk.HyperparameterTuning(done.hyperparameter_tuning_id)
    assert sdk_view.optimal_trial is not None and sdk_view.successful_trial_count == 8


def test_a_random_tuning_stops_at_max_trials_and_at_its_goal(
    sdk: Any, experiment_id: str, platform: RunningPlatform, tmp_path: Path
) -> None:
    src = source_dir(tmp_path, "objective.py")
    capped = run(
        sdk,
        experiment_id,
        src,
        tmp_path / "a",
        hyperparameter_spec_list=[x_spec("0", "6")],
        tuning_strategy_name="RANDOM",
        tuning_strategy_random_state=1,
        max_trial_count=3,
        parallel_trial_count=2,
    )
    goal = run(
        sdk,
        experiment_id,
        src,
        tmp_path / "b",
        hyperparameter_spec_list=[x_spec("0", "6")],
        tuning_strategy_name="RANDOM",
        tuning_strategy_random_state=1,
        max_trial_count=50,
        objective_goal=100.0,  # any trial reaches it: the first success ends the tuning
    )
    first = wait_tuning(platform, capped.hyperparameter_tuning_id, ENDED)
    second = wait_tuning(platform, goal.hyperparameter_tuning_id, ENDED)
    assert first["hyperparameterTuningStatusCode"] == "COMPLETE", first
    assert first["hyperparameterTuningStatusDetail"] == "MaxTrialsReached"
    assert first["successfulTrialCount"] == 3
    assert second["hyperparameterTuningStatusCode"] == "COMPLETE", second
    assert second["hyperparameterTuningStatusDetail"] == "GoalReached"
    assert second["successfulTrialCount"] >= 1 and second["successfulTrialCount"] < 50


def test_failing_trials_fail_the_tuning_at_the_maximum(
    sdk: Any, experiment_id: str, platform: RunningPlatform, tmp_path: Path
) -> None:
    src = source_dir(tmp_path, "fail.py")  # every trial exits with code 3
    started = run(
        sdk,
        experiment_id,
        src,
        tmp_path / "out",
        entry_point="fail.py",
        hyperparameter_spec_list=[x_spec("0", "1")],
        tuning_strategy_name="RANDOM",
        tuning_strategy_random_state=3,
        max_trial_count=10,
        max_failed_trial_count=2,
    )
    body = wait_tuning(platform, started.hyperparameter_tuning_id, ENDED)
    assert body["hyperparameterTuningStatusCode"] == "FAIL_HYPERPARAMETER_TUNING", body
    assert body["failedTrialCount"] == 2 and body["successfulTrialCount"] == 0
    assert "exit code 3" in body["hyperparameterTuningStatusReason"]
    failed = trials(platform, started.hyperparameter_tuning_id)
    assert [t["trialStatusCode"] for t in failed] == ["FAILED", "FAILED"]


def test_median_early_stopping_stops_trials_worse_than_the_median(
    sdk: Any, experiment_id: str, platform: RunningPlatform, tmp_path: Path
) -> None:
    src = source_dir(tmp_path, "objective.py")
    started = run(
        sdk,
        experiment_id,
        src,
        tmp_path / "out",
        hyperparameter_spec_list=[
            x_spec("0", "6"),
            HyperparameterSpec(
                hyperparameter_name="steps",
                hyperparameter_type_code="categorical",
                hyperparameter_specified_values="40",
            ),
        ],
        tuning_strategy_name="RANDOM",
        tuning_strategy_random_state=3,  # trial 3 draws x with a loss above the median
        max_trial_count=6,
        early_stopping_algorithm="MEDIAN",
        early_stopping_min_trial_count=2,
        early_stopping_start_step=2,
    )
    body = wait_tuning(platform, started.hyperparameter_tuning_id, ENDED)
    assert body["hyperparameterTuningStatusCode"] == "COMPLETE", body
    stopped = [
        t
        for t in trials(platform, started.hyperparameter_tuning_id)
        if t["trialStatusCode"] == "EARLY_STOPPED"
    ]
    assert stopped, "no trial was early-stopped"
    assert body["earlyStoppedTrialCount"] == len(stopped)
    assert all("median" in (t["statusReason"] or "") for t in stopped)
    finished = body["successfulTrialCount"] + body["earlyStoppedTrialCount"]
    assert finished + body["failedTrialCount"] == 6


def test_stop_kills_the_running_trials(
    sdk: Any, experiment_id: str, platform: RunningPlatform, tmp_path: Path
) -> None:
    src = source_dir(tmp_path, "sleeper.py")
    started = run(
        sdk,
        experiment_id,
        src,
        tmp_path / "out",
        entry_point="sleeper.py",
        hyperparameter_spec_list=[
            HyperparameterSpec(
                hyperparameter_name="seconds",
                hyperparameter_type_code="double",
                hyperparameter_min_value="60",
                hyperparameter_max_value="61",
            )
        ],
        metric_list=[Metric(name="loss")],
        tuning_strategy_name="RANDOM",
        max_trial_count=4,
        parallel_trial_count=2,
    )
    tuning_id = started.hyperparameter_tuning_id
    deadline = time.monotonic() + 60
    while tuning(platform, tuning_id)["runningTrialCount"] < 2:
        assert time.monotonic() < deadline, "the trials never ran"
        time.sleep(0.3)
    sdk.HyperparameterTuning(tuning_id).stop()
    body = wait_tuning(platform, tuning_id, ENDED, timeout=60)
    assert body["hyperparameterTuningStatusCode"] == "STOPPED", body
    assert body["killedTrialCount"] == 2 and body["runningTrialCount"] == 0
