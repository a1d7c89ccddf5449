"""Trials on several nodes: ``distributedNodeCount`` nodes per trial, through the unmodified
``easymaker`` SDK on the session's Ray head (one gang of slot actors per parallel trial)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import requests
from easymaker.training.components import HyperparameterSpec

from tests.e2e.conftest import RunningPlatform
from tests.e2e.test_sdk_trainings import experiment_id, source_dir
from tests.e2e.test_sdk_tunings import ENDED, run, trials, wait_tuning, x_spec

__all__ = ["experiment_id"]  # the fixture, shared


def trial_sources(platform: RunningPlatform, tuning_id: str, trial_id: str) -> set[str]:
    reply = requests.get(
        f"{platform.api_url}/hyperparameter-tunings/{tuning_id}/trials/{trial_id}/logs",
        params={"page": 1},
        headers=platform.auth_headers,
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    return {line["source"] for line in reply.json()["trialLog"]["logList"]}


def test_torchrun_trials_on_two_nodes_meet_and_report_from_node_0(
    sdk: Any, experiment_id: str, platform: RunningPlatform, tmp_path: Path
) -> None:
    src = source_dir(tmp_path, "ddp_objective.py")
    out = tmp_path / "models"
    started = run(
        sdk,
        experiment_id,
        src,
        out,
        entry_point="ddp_objective.py",
        hyperparameter_spec_list=[x_spec("2", "3", "1")],
        tuning_strategy_name="GRID",
        max_trial_count=2,
        parallel_trial_count=1,
        distributed_node_count=2,
        use_torchrun=True,
        nproc_per_node=1,
    )
    tuning_id = started.hyperparameter_tuning_id
    body = wait_tuning(platform, tuning_id, ENDED, timeout=300)
    assert body["hyperparameterTuningStatusCode"] == "COMPLETE", body
    assert body["successfulTrialCount"] == 2
    best = body["optimalTrial"]
    params = {p["parameterName"]: p["parameterValue"] for p in best["hyperparameterList"]}
    assert params == {"x": "3.0"}
    summaries = [json.loads(p.read_text()) for p in out.rglob("summary.json")]
    assert len(summaries) == 1  # only the best trial's model folder is kept
    summary = summaries[0]
    assert summary["world_size"] == 2 and summary["rank_sum"] == 0 + 1
    assert summary["node_count"] == "2" and summary["x"] == 3.0
    for trial in trials(platform, tuning_id):
        sources = trial_sources(platform, tuning_id, trial["trialId"])
        assert {"node0", "node1"} <= sources, sources


def test_a_node_that_fails_fails_its_trial_and_the_slot_runs_the_next(
    sdk: Any, experiment_id: str, platform: RunningPlatform, tmp_path: Path
) -> None:
    src = source_dir(tmp_path, "node_objective.py")
    out = tmp_path / "models"
    started = run(
        sdk,
        experiment_id,
        src,
        out,
        entry_point="node_objective.py",
        hyperparameter_spec_list=[x_spec("1", "3", "1")],  # node 1 gives up at x = 2 and 3
        tuning_strategy_name="GRID",
        max_trial_count=3,
        max_failed_trial_count=3,
        parallel_trial_count=1,
        distributed_node_count=2,
    )
    tuning_id = started.hyperparameter_tuning_id
    body = wait_tuning(platform, tuning_id, ENDED, timeout=300)
    assert body["hyperparameterTuningStatusCode"] == "COMPLETE", body
    listed = {
        next(p["parameterValue"] for p in t["hyperparameterList"]): t
        for t in trials(platform, tuning_id)
    }
    assert {x: t["trialStatusCode"] for x, t in listed.items()} == {
        "1.0": "SUCCEEDED",
        "2.0": "FAILED",
        "3.0": "FAILED",
    }
    for x in ("2.0", "3.0"):  # node 1's failure, with its last line; node 0 was killed
        reason = listed[x]["statusReason"] or ""
        assert reason.startswith("node 1: "), reason
        assert f"node 1 gives up at x={x}" in reason, reason
    meeting = json.loads(next(out.rglob("meeting.json")).read_text())
    assert meeting["EM_NODE_COUNT"] == "2" and meeting["MASTER_ADDR"]
    assert int(meeting["MASTER_PORT"]) > 0


def test_a_sigkilled_node_worker_fails_its_trial_and_a_new_gang_runs_the_next(
    sdk: Any, experiment_id: str, platform: RunningPlatform, tmp_path: Path
) -> None:
    src = source_dir(tmp_path, "gang_marker.py")
    marker = tmp_path / "runs.txt"
    started = run(
        sdk,
        experiment_id,
        src,
        tmp_path / "models",
        entry_point="gang_marker.py",
        hyperparameter_spec_list=[
            x_spec("0", "6"),
            HyperparameterSpec(
                hyperparameter_name="marker",
                hyperparameter_type_code="categorical",
                hyperparameter_specified_values=str(marker),
            ),
        ],
        tuning_strategy_name="RANDOM",
        tuning_strategy_random_state=5,
        max_trial_count=3,
        max_failed_trial_count=3,
        parallel_trial_count=1,
        distributed_node_count=2,
    )
    tuning_id = started.hyperparameter_tuning_id
    deadline = time.monotonic() + 120
    node1 = None
    while node1 is None:
        assert time.monotonic() < deadline, "trial 0's node 1 never ran"
        lines = marker.read_text().split("\n") if marker.exists() else []
        node1 = next((int(line.split()[2]) for line in lines if line.startswith("0 1 ")), None)
        time.sleep(0.1)
    worker = psutil.Process(node1).parent()  # the slot actor of node 1
    assert worker is not None and worker.name() == "ray::TrialSlot", worker
    worker.send_signal(signal.SIGKILL)

    body = wait_tuning(platform, tuning_id, ENDED, timeout=300)
    assert body["hyperparameterTuningStatusCode"] == "COMPLETE", body
    statuses = {t["trialName"]: t for t in trials(platform, tuning_id)}
    first = statuses["trial-0"]
    assert first["trialStatusCode"] == "FAILED", first
    assert (first["statusReason"] or "").startswith("node 1's worker died"), first
    assert {statuses[n]["trialStatusCode"] for n in ("trial-1", "trial-2")} == {"SUCCEEDED"}
    runs = [line.split() for line in marker.read_text().splitlines()]
    assert sorted((number, rank) for number, rank, _pid in runs) == [
        (n, r) for n in ("0", "1", "2") for r in ("0", "1")
    ]
