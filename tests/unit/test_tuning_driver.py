"""The tuning driver's rules (how a trial ends, when the tuning ends), the job of one trial,
the metric tap on a real process's output, and the control-plane client's tuning calls."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from chalicelib.objectstore import LocalFileStore
from runners.control import ControlPlane
from runners.process import UserProcess
from runners.tuning.driver import (
    COMPLETE,
    EARLY_STOPPED,
    FAIL,
    FAILED,
    GOAL_REACHED,
    KILLED,
    MAX_TRIALS_REACHED,
    METRICS_UNAVAILABLE,
    SUCCEEDED,
    SUGGESTION_END_REACHED,
    Ending,
    Limits,
    Tally,
    best_trial,
    goal_reached,
    may_launch,
    sibling_uri,
    trial_outcome,
    tuning_end,
)
from runners.tuning.metrics import DEFAULT_METRIC_REGEX, MetricCollector
from runners.tuning.trial import MetricTap, trial_job

# -- how a trial ends ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "seen", "pruned", "killed", "failed", "expected"),
    [
        (0, True, False, False, False, SUCCEEDED),
        (0, False, False, False, False, METRICS_UNAVAILABLE),
        (1, True, False, False, False, FAILED),
        (-9, False, False, False, False, FAILED),
        (None, True, False, False, False, FAILED),  # the worker died
        (-15, True, True, False, False, EARLY_STOPPED),  # killed by the pruner
        (0, True, True, False, False, EARLY_STOPPED),  # ended as the pruner's kill landed
        (-15, True, False, True, False, KILLED),  # the tuning ended around it
        (None, False, False, True, False, KILLED),
        (-15, True, True, True, False, EARLY_STOPPED),  # pruned first, then the stop
        (0, True, False, False, True, FAILED),  # killed for a limit, whatever its exit
    ],
)
def test_trial_outcome(
    code: int | None, seen: bool, pruned: bool, killed: bool, failed: bool, expected: str
) -> None:
    assert trial_outcome(code, seen, pruned, killed, failed) == expected


def test_the_tally_counts_every_end_but_killed_against_the_budget() -> None:
    tally = Tally.of([SUCCEEDED, FAILED, EARLY_STOPPED, METRICS_UNAVAILABLE, KILLED, KILLED])
    assert (tally.succeeded, tally.failed, tally.killed) == (1, 1, 2)
    assert tally.finished == 4
    assert tally.add("RUNNING") == tally  # not an end


# -- when the tuning ends -----------------------------------------------------------------

LIMITS = Limits(max_trials=5, max_failed=2, parallel=2)


def test_the_tuning_goes_on_while_nothing_ends_it() -> None:
    assert tuning_end(Tally(succeeded=2, failed=1), False, False, 2, LIMITS) is None
    # the grid is done but trials still run: wait for them
    assert tuning_end(Tally(succeeded=2), False, True, 1, LIMITS) is None


def test_a_reached_goal_completes_first() -> None:
    # even when the failures or the budget would end it at the same moment
    ending = tuning_end(Tally(succeeded=3, failed=2), True, True, 0, LIMITS)
    assert ending == Ending(COMPLETE, GOAL_REACHED)


def test_failures_reaching_the_maximum_fail_the_tuning_with_the_last_reason() -> None:
    ending = tuning_end(Tally(succeeded=3, failed=2), False, False, 1, LIMITS, "trial 4: boom")
    assert ending is not None and ending.status == FAIL and ending.detail is None
    assert ending.reason is not None
    assert "2 trial(s) failed" in ending.reason and "maxFailedTrialCount 2" in ending.reason
    assert ending.reason.endswith("the last: trial 4: boom")


def test_finished_trials_reaching_max_trial_count_complete_it() -> None:
    # killed trials do not use the budget; metrics-unavailable and early-stopped ones do
    ending = tuning_end(
        Tally(succeeded=1, failed=1, early_stopped=2, metrics_unavailable=1, killed=3),
        False,
        False,
        0,
        LIMITS,
    )
    assert ending == Ending(COMPLETE, MAX_TRIALS_REACHED)
    assert tuning_end(Tally(succeeded=4, killed=3), False, False, 0, LIMITS) is None


def test_an_exhausted_grid_completes_once_nothing_runs() -> None:
    assert tuning_end(Tally(succeeded=3), False, True, 0, LIMITS) == Ending(
        COMPLETE, SUGGESTION_END_REACHED
    )


def test_metrics_unavailable_trials_are_not_failures() -> None:
    assert tuning_end(Tally(metrics_unavailable=4), False, False, 0, LIMITS) is None


def test_a_trial_is_launched_only_with_a_free_slot_budget_and_points_left() -> None:
    assert may_launch(Tally(), 0, LIMITS, False)
    assert not may_launch(Tally(), 2, LIMITS, False)  # parallel slots full
    assert may_launch(Tally(succeeded=3), 1, LIMITS, False)
    assert not may_launch(Tally(succeeded=3, failed=1), 1, LIMITS, False)  # 4 + 1 = budget
    assert may_launch(Tally(succeeded=3, killed=5), 1, LIMITS, False)
    assert not may_launch(Tally(), 0, LIMITS, True)  # the grid is exhausted


def test_the_goal_compares_by_direction() -> None:
    assert goal_reached(0.9, 0.9, maximize=True)
    assert not goal_reached(0.89, 0.9, maximize=True)
    assert goal_reached(0.1, 0.1, maximize=False)
    assert not goal_reached(0.11, 0.1, maximize=False)
    assert not goal_reached(None, 0.1, maximize=False)
    assert not goal_reached(0.1, None, maximize=False)
    assert not goal_reached(float("nan"), 0.1, maximize=False)


def test_the_best_trial_breaks_ties_by_the_lowest_number() -> None:
    assert best_trial({}, maximize=True) is None
    assert best_trial({3: 0.5, 1: 0.9, 2: 0.9}, maximize=True) == 1
    assert best_trial({3: 0.5, 1: 0.9, 2: 0.5}, maximize=False) == 2


def test_a_trial_folder_gives_its_siblings() -> None:
    assert sibling_uri("s3://b/out/trials/3", 3, 12) == "s3://b/out/trials/12"
    assert sibling_uri("file:///x/trials/3/", 3, 0) == "file:///x/trials/0"
    assert sibling_uri("s3://b/out/trials/13", 3, 4) is None


# -- the job of one trial -----------------------------------------------------------------


def tuning_job() -> dict[str, Any]:
    return {
        "hyperparameterTuningId": "hpt-1",
        "name": "tune",
        "appKey": "app",
        "experimentId": "e-1",
        "region": "kr1",
        "nodesPerTrial": 1,
        "spec": {
            "flavor": {"name": "m2.c1m2", "vcpus": 1, "ram": 2048},
            "entry_point": "main.py",
            "hyperparameter_list": [
                {"parameter_name": "epochs", "parameter_value": 3},
                {"parameter_name": "lr", "parameter_value": "0.5"},
            ],
            "model_upload_uri": "s3://bucket/model",
            "check_point_upload_uri": "s3://bucket/ckpt",
            "log_upload_uri": "s3://bucket/logs",
            "instance_count": 4,
            "parallel_trial_count": 4,
        },
    }


def test_a_trial_job_adds_the_suggestion_to_the_fixed_hyperparameters() -> None:
    job = tuning_job()
    trial = {
        "trialId": "tr-7",
        "logPrefix": "logs/hyperparameter-tuning/app/hpt-1/trials/7/",
        "modelUploadUri": "s3://bucket/model/trials/7",
        "checkPointUploadUri": "s3://bucket/ckpt/trials/7",
    }
    made = trial_job(job, 7, trial, {"lr": "0.01", "layers": "3"})
    spec = made["spec"]
    assert spec["hyperparameter_list"] == [
        {"parameter_name": "epochs", "parameter_value": "3"},  # fixed, as a string
        {"parameter_name": "lr", "parameter_value": "0.01"},  # the suggestion wins
        {"parameter_name": "layers", "parameter_value": "3"},
    ]
    assert spec["model_upload_uri"] == "s3://bucket/model/trials/7"
    assert spec["check_point_upload_uri"] == "s3://bucket/ckpt/trials/7"
    assert spec["instance_count"] == 1 and "log_upload_uri" not in spec
    assert made["trainingId"] == made["trialId"] == "tr-7"
    assert made["logPrefix"] == trial["logPrefix"] and made["trialNumber"] == 7
    assert made["trainingName"] == "tune-trial7"
    # the tuning's own job is left as it was
    assert job["spec"]["model_upload_uri"] == "s3://bucket/model"
    assert len(job["spec"]["hyperparameter_list"]) == 2


def test_a_trial_without_checkpoint_folder_uploads_no_checkpoint() -> None:
    trial = {"trialId": "t", "logPrefix": "p/", "modelUploadUri": "s3://b/m/trials/0"}
    assert trial_job(tuning_job(), 0, trial, {"lr": "1"})["spec"]["check_point_upload_uri"] is None


# -- the metric tap on a real process -----------------------------------------------------

KATIB_SCRIPT = r"""
import sys, time
out, err = sys.stdout, sys.stderr
out.write("starting\n"); out.flush()
out.write("epoch=1 loss=0.9"); out.flush()     # a line written in two pieces
time.sleep(0.05)
out.write(" accuracy=0.5\n"); out.flush()
err.write("epoch=2 loss=0.7 accuracy=0.6\n"); err.flush()   # stderr counts as well
out.write("step=30 epoch=3 loss=0.5\rstep=31 loss=0.4\n"); out.flush()  # progress bar
out.write("loss=0.3")                          # no newline, no step, at the very end
"""


def tap(tmp_path: Path) -> MetricTap:
    collector = MetricCollector(DEFAULT_METRIC_REGEX, ["accuracy"], "loss")
    return MetricTap(LocalFileStore(tmp_path / "store"), "logs/trial/0/", collector)


def test_the_tap_parses_stdout_and_stderr_of_a_real_process(tmp_path: Path) -> None:
    sink = tap(tmp_path)
    process = UserProcess(
        [sys.executable, "-c", KATIB_SCRIPT], cwd=tmp_path, env={}, sink=sink, source="node0"
    )
    assert process.wait(30) == 0
    process.wait_output()
    observations = sink.drain()
    # a step from "step" (over "epoch") on the line, else the count of values so far
    assert sorted(observations) == [(1, 0.9), (2, 0.7), (5, 0.3), (30, 0.5), (31, 0.4)]
    assert sink.drain() == []  # drained
    summary = sink.summary()
    assert summary["loss"] == {"min": 0.3, "max": 0.9, "latest": 0.3}
    # (stdout and stderr are read by two threads: no order between them)
    assert (summary["accuracy"]["min"], summary["accuracy"]["max"]) == (0.5, 0.6)
    sink.close()
    chunks = sorted((tmp_path / "store" / "logs" / "trial" / "0" / "node0").glob("*.jsonl"))
    bodies = [json.loads(line)["body"] for c in chunks for line in c.read_text().splitlines()]
    assert "starting" in bodies and "loss=0.3" in bodies


def test_the_tap_reads_only_the_users_processes(tmp_path: Path) -> None:
    sink = tap(tmp_path)
    sink.write("driver", "stdout", "loss=0.1\n")
    sink.write("setup", "stderr", "loss=0.2\n")
    sink.write("node1", "stderr", "loss=0.3\n")
    assert sink.drain() == [(1, 0.3)]
    sink.close()


def test_the_tap_gives_observations_while_the_process_runs(tmp_path: Path) -> None:
    sink = tap(tmp_path)
    script = (
        "import time\n"
        "for step in range(1, 4):\n"
        "    print(f'step={step} loss={1 / step}', flush=True)\n"
        "time.sleep(30)\n"
    )
    process = UserProcess(
        [sys.executable, "-c", script], cwd=tmp_path, env={}, sink=sink, source="node0"
    )
    try:
        seen: list[tuple[int, float]] = []
        deadline = time.monotonic() + 20
        while len(seen) < 3 and time.monotonic() < deadline:
            seen += sink.drain()
            time.sleep(0.05)
        assert [step for step, _ in seen] == [1, 2, 3]
        assert process.poll() is None  # still running
    finally:
        process.kill_tree()
        sink.close()


# -- the control plane client ---------------------------------------------------------------


def client(kind: str, answers: dict[str, Any]) -> tuple[ControlPlane, list[Any]]:
    calls: list[Any] = []
    plane = ControlPlane.__new__(ControlPlane)
    plane.kind, plane.job_id = kind, "hpt-1"

    def fake_call(
        method: str, path: str, body: dict[str, Any] | None = None, retry_for: float = 120.0
    ) -> Any:
        calls.append((method, path, body, retry_for))
        return answers[path]

    plane._call = fake_call  # type: ignore[method-assign]
    return plane, calls


def test_report_sends_the_detail_and_reads_the_tuning_answer() -> None:
    plane, calls = client(
        "hyperparameter-tuning", {"status": {"hyperparameterTuning": {"status": "COMPLETE"}}}
    )
    assert plane.report("COMPLETE", None, "GoalReached") == "COMPLETE"
    assert calls[-1][2] == {"status": "COMPLETE", "reason": None, "detail": "GoalReached"}
    plane.report("RUNNING")
    assert calls[-1][2] == {"status": "RUNNING", "reason": None}  # no detail: not sent


def test_a_training_report_is_unchanged() -> None:
    plane, calls = client("training", {"status": {"training": {"status": "RUNNING"}}})
    assert plane.report("RUNNING") == "RUNNING"
    assert calls == [("POST", "status", {"status": "RUNNING", "reason": None}, 120.0)]


def test_trial_posts_the_payload_and_returns_the_trial() -> None:
    trial = {"trialId": "t-1", "status": "CREATED", "logPrefix": "p/", "modelUploadUri": "u"}
    plane, calls = client("hyperparameter-tuning", {"trials": {"trial": trial}})
    payload = {"number": 0, "params": {"lr": "0.1"}, "status": "CREATED"}
    assert plane.trial(payload) == trial
    assert calls == [("POST", "trials", payload, 120.0)]
    plane.trial(payload, retry_for=5.0)
    assert calls[-1][3] == 5.0
