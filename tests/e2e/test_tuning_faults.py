"""Faults while hyperparameter tunings run on the real Ray head: a trial's process killed
from outside, the control plane killed without warning and restarted, the tuning's driver
killed. Every trial is counted exactly once; none is lost and none runs twice."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import requests

from tests.e2e.conftest import RunningPlatform, start_platform, stop_platform
from tests.e2e.test_sdk_trainings import CPU_IMAGE, source_dir, unique
from tests.e2e.test_sdk_tunings import ENDED, trials, tuning, wait_tuning

SCRIPT = "trial_marker.py"
CATALOG_IDS: dict[str, tuple[str, str]] = {}  # base URL: image id, flavor id
COUNT_FIELDS = {
    "SUCCEEDED": "successfulTrialCount",
    "FAILED": "failedTrialCount",
    "EARLY_STOPPED": "earlyStoppedTrialCount",
    "KILLED": "killedTrialCount",
    "METRICS_UNAVAILABLE": "metricsUnavailableTrialCount",
    "RUNNING": "runningTrialCount",
}


def catalog_ids(platform: RunningPlatform) -> tuple[str, str]:
    if platform.base_url not in CATALOG_IDS:
        headers = platform.auth_headers
        images = requests.get(f"{platform.api_url}/images", headers=headers, timeout=10).json()
        flavors = requests.get(f"{platform.api_url}/flavors", headers=headers, timeout=10).json()
        CATALOG_IDS[platform.base_url] = (
            next(i["imageId"] for i in images["imageList"] if i["imageName"] == CPU_IMAGE),
            next(f["id"] for f in flavors["flavorList"] if f["name"] == "m2.c1m2"),
        )
    return CATALOG_IDS[platform.base_url]


def create(
    platform: RunningPlatform,
    tmp_path: Path,
    marker: Path,
    *,
    seconds: str,
    parallel: int,
    max_trials: int = 4,
    max_failed: int | None = None,
) -> str:
    """A RANDOM tuning of ``trial_marker.py``: x in [0, 6], the marker path and the sleep
    carried by one-value categorical dimensions."""
    image_id, flavor_id = catalog_ids(platform)
    src = source_dir(tmp_path, SCRIPT)
    body: dict[str, Any] = {
        "hyperparameterTuningName": unique("fault"),
        "experimentName": "tuning-faults",
        "imageId": image_id,
        "flavorId": flavor_id,
        "instanceCount": parallel,
        "parallelTrialCount": parallel,
        "sourceDirUri": f"file://{src}",
        "entryPoint": SCRIPT,
        "modelUploadUri": f"file://{tmp_path / 'models'}",
        "timeoutMinutes": 10,
        "hyperparameterSpecList": [
            {
                "hyperparameterName": "x",
                "hyperparameterTypeCode": "double",
                "hyperparameterMinValue": "0",
                "hyperparameterMaxValue": "6",
            },
            {
                "hyperparameterName": "marker",
                "hyperparameterTypeCode": "categorical",
                "hyperparameterSpecifiedValues": str(marker),
            },
            {
                "hyperparameterName": "seconds",
                "hyperparameterTypeCode": "categorical",
                "hyperparameterSpecifiedValues": seconds,
            },
        ],
        "metricList": [{"name": "loss"}],
        "objectiveMetric": {"name": "loss"},
        "objectiveTypeCode": "MINIMIZE",
        "maxTrialCount": max_trials,
        "tuningStrategyName": "RANDOM",
        "tuningStrategyRandomState": 11,
    }
    if max_failed is not None:
        body["maxFailedTrialCount"] = max_failed
    reply = requests.post(
        f"{platform.api_url}/hyperparameter-tunings",
        json=body,
        headers=platform.auth_headers,
        timeout=30,
    )
    assert reply.status_code == 201, reply.text
    tuning_id: str = reply.json()["hyperparameterTuning"]["hyperparameterTuningId"]
    return tuning_id


def runs(marker: Path) -> list[tuple[str, int]]:
    """``(trial number, pid)`` of every run of the entry point so far."""
    if not marker.exists():
        return []
    lines = [line.split() for line in marker.read_text().splitlines()]
    return [(number, int(pid)) for number, pid in lines]


def wait_for_runs(marker: Path, count: int, timeout: float = 40) -> list[tuple[str, int]]:
    deadline = time.monotonic() + timeout
    while len(runs(marker)) < count:
        assert time.monotonic() < deadline, f"{count} trial run(s) never started: {runs(marker)}"
        time.sleep(0.05)
    return runs(marker)


def by_number(listed: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["trialName"].removeprefix("trial-"): t for t in listed}


def assert_counts_add_up(body: dict[str, Any], listed: list[dict[str, Any]]) -> None:
    """Each count of the tuning is its number of listed trials in that status, and the ended
    ones (successful + failed + early-stopped + killed + without metrics) are all of them."""
    statuses = [t["trialStatusCode"] for t in listed]
    for status, name in COUNT_FIELDS.items():
        assert body[name] == statuses.count(status), (name, body, statuses)
    ended = sum(body[name] for status, name in COUNT_FIELDS.items() if status != "RUNNING")
    assert ended == len(listed), (body, statuses)


def gone(pid: int, timeout: float) -> bool:
    """Whether ``pid`` ends (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_a_sigkilled_trial_fails_naming_the_signal_and_the_tuning_goes_on(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    marker = tmp_path / "runs.txt"
    tuning_id = create(platform, tmp_path, marker, seconds="4", parallel=2, max_failed=4)
    victim, pid = wait_for_runs(marker, 1)[0]
    os.kill(pid, signal.SIGKILL)

    body = wait_tuning(platform, tuning_id, ENDED, timeout=60)
    listed = trials(platform, tuning_id)
    trial = by_number(listed)
    assert body["hyperparameterTuningStatusCode"] == "COMPLETE", body
    assert body["hyperparameterTuningStatusDetail"] == "MaxTrialsReached", body
    # A FAILED trial uses up the budget (the driver's Tally.finished): no replacement is drawn.
    assert sorted(trial) == ["0", "1", "2", "3"], listed
    assert trial[victim]["trialStatusCode"] == "FAILED", trial[victim]
    assert "was killed by signal SIGKILL" in trial[victim]["statusReason"], trial[victim]
    others = {n: t["trialStatusCode"] for n, t in trial.items() if n != victim}
    assert set(others.values()) == {"SUCCEEDED"}, listed
    assert body["successfulTrialCount"] == 3 and body["failedTrialCount"] == 1, body
    assert body["earlyStoppedTrialCount"] == body["killedTrialCount"] == 0, body
    assert body["metricsUnavailableTrialCount"] == body["runningTrialCount"] == 0, body
    assert_counts_add_up(body, listed)
    assert sorted(number for number, _ in runs(marker)) == ["0", "1", "2", "3"]
    assert body["optimalTrial"]["trialName"] != f"trial-{victim}"


def test_a_sigkilled_slot_worker_fails_its_trial_and_a_new_worker_runs_the_rest(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    marker = tmp_path / "runs.txt"
    tuning_id = create(platform, tmp_path, marker, seconds="3", parallel=1, max_failed=4)
    victim, pid = wait_for_runs(marker, 1)[0]
    worker = psutil.Process(pid).parent()  # the slot actor running the trial's code
    assert worker is not None and worker.name() == "ray::TrialSlot", worker
    worker.send_signal(signal.SIGKILL)
    assert gone(pid, 2.0)  # its trial's code dies with it, long before its 3 s sleep ends

    body = wait_tuning(platform, tuning_id, ENDED, timeout=90)
    listed = trials(platform, tuning_id)
    trial = by_number(listed)
    assert body["hyperparameterTuningStatusCode"] == "COMPLETE", body
    assert sorted(trial) == ["0", "1", "2", "3"], listed
    assert trial[victim]["trialStatusCode"] == "FAILED", trial[victim]
    assert trial[victim]["statusReason"].startswith("its worker died"), trial[victim]
    others = {n: t["trialStatusCode"] for n, t in trial.items() if n != victim}
    assert set(others.values()) == {"SUCCEEDED"}, listed
    assert_counts_add_up(body, listed)
    assert sorted(number for number, _ in runs(marker)) == ["0", "1", "2", "3"]  # each once


def test_a_tuning_survives_a_sigkilled_control_plane_and_runs_each_trial_once(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    first = start_platform(home)
    port = int(first.base_url.rsplit(":", 1)[1])
    marker = tmp_path / "runs.txt"
    try:
        tuning_id = create(first, tmp_path, marker, seconds="3", parallel=1)
        deadline = time.monotonic() + 40
        while by_number(trials(first, tuning_id)).get("1", {}).get("trialStatusCode") != (
            "RUNNING"
        ):
            assert time.monotonic() < deadline, trials(first, tuning_id)
            time.sleep(0.1)
    except BaseException:
        stop_platform(first)
        raise
    os.killpg(first.process.pid, signal.SIGKILL)  # launcher, server and tick, no warning
    first.process.wait(timeout=10)

    # The driver and trial 1 go on without a control plane: trial 1 ends while it is away,
    # so its report waits in the driver's outbox, and trial 2 cannot be created meanwhile.
    trial_1 = dict(wait_for_runs(marker, 2))["1"]
    assert gone(trial_1, 15), "trial 1 never ended"
    time.sleep(2)
    assert [number for number, _ in runs(marker)] == ["0", "1"], runs(marker)
    second = start_platform(home, port=port)
    try:
        body = wait_tuning(second, tuning_id, ENDED, timeout=60)
        listed = trials(second, tuning_id)
        assert body["hyperparameterTuningStatusCode"] == "COMPLETE", body
        assert body["hyperparameterTuningStatusDetail"] == "MaxTrialsReached", body
        assert [t["trialName"] for t in listed] == ["trial-0", "trial-1", "trial-2", "trial-3"]
        assert {t["trialStatusCode"] for t in listed} == {"SUCCEEDED"}, listed
        assert body["successfulTrialCount"] == 4, body
        assert_counts_add_up(body, listed)
        numbers = [number for number, _ in runs(marker)]
        assert sorted(numbers) == ["0", "1", "2", "3"], numbers  # no trial ran twice
    finally:
        stop_platform(second)


def test_a_killed_tuning_driver_is_settled_by_the_tick_and_its_trials_are_killed(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    marker = tmp_path / "runs.txt"
    tuning_id = create(platform, tmp_path, marker, seconds="60", parallel=2)
    started = wait_for_runs(marker, 2)
    deadline = time.monotonic() + 30
    while tuning(platform, tuning_id)["runningTrialCount"] < 2:
        assert time.monotonic() < deadline, trials(platform, tuning_id)
        time.sleep(0.1)
    drivers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and p.info["cmdline"][-2:] == ["runners.tuning", tuning_id]
    ]
    assert len(drivers) == 1, drivers
    drivers[0].kill()

    body = wait_tuning(platform, tuning_id, ENDED, timeout=40)
    listed = trials(platform, tuning_id)
    assert body["hyperparameterTuningStatusCode"] == "FAIL_HYPERPARAMETER_TUNING", body
    assert "without reporting" in body["hyperparameterTuningStatusReason"], body
    assert len(listed) == 2, listed  # no trial was drawn after the driver died
    assert {t["trialStatusCode"] for t in listed} == {"KILLED"}, listed
    assert all("FAIL_HYPERPARAMETER_TUNING" in t["statusReason"] for t in listed), listed
    assert body["killedTrialCount"] == 2 and body["runningTrialCount"] == 0, body
    assert_counts_add_up(body, listed)
    left = [pid for _, pid in started if not gone(pid, 15)]
    assert not left, f"trial processes outlived their driver: {left}"
