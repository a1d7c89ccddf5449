"""Faults while trainings run: a control plane killed without warning, a killed job process,
a killed job driver. State lives in the database and the job's result file; nothing is lost
and nothing runs twice."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import requests

from tests.e2e.conftest import RunningPlatform, start_platform, stop_platform
from tests.e2e.test_sdk_trainings import ENDED, source_dir, unique, wait_until

CATALOG_IDS: dict[str, str] = {}


def create(platform: RunningPlatform, src: Path, out: Path, **hyperparameters: str) -> str:
    headers = platform.auth_headers
    if not CATALOG_IDS:
        images = requests.get(f"{platform.api_url}/images", headers=headers, timeout=10).json()
        flavors = requests.get(f"{platform.api_url}/flavors", headers=headers, timeout=10).json()
        CATALOG_IDS["image"] = next(
            i["imageId"]
            for i in images["imageList"]
            if i["imageName"] == "Ubuntu 22.04 CPU PyTorch Training"
        )
        CATALOG_IDS["flavor"] = next(
            f["id"] for f in flavors["flavorList"] if f["name"] == "m2.c1m2"
        )
    body: dict[str, Any] = {
        "trainingName": unique("fault"),
        "experimentName": "faults",
        "imageId": CATALOG_IDS["image"],
        "flavorId": CATALOG_IDS["flavor"],
        "sourceDirUri": f"file://{src}",
        "entryPoint": "sleeper.py",
        "hyperparameterList": [
            {"parameterName": k, "parameterValue": v} for k, v in hyperparameters.items()
        ],
        "modelUploadUri": f"file://{out}",
        "trainingTypeCode": "NORMAL",
    }
    reply = requests.post(f"{platform.api_url}/trainings", json=body, headers=headers, timeout=30)
    assert reply.status_code == 201, reply.text
    training_id: str = reply.json()["training"]["trainingId"]
    return training_id


def wait_for_file(path: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared")


def test_a_training_survives_a_sigkilled_control_plane_and_completes_once(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    first = start_platform(home)
    port = int(first.base_url.rsplit(":", 1)[1])
    src = source_dir(tmp_path, "sleeper.py")
    marker = tmp_path / "runs.txt"
    training_id = create(first, src, tmp_path / "model", seconds="4", marker=str(marker))
    wait_until(first, training_id, {"RUNNING"})
    wait_for_file(marker)
    os.killpg(first.process.pid, signal.SIGKILL)  # launcher, server and tick, no warning
    first.process.wait(timeout=10)

    time.sleep(2)  # the job goes on without a control plane
    second = start_platform(home, port=port)
    try:
        body = wait_until(second, training_id, ENDED, timeout=120)
        assert body["trainingStatusCode"] == "COMPLETE", body
        assert (tmp_path / "model" / "done.txt").read_text() == "done"
        assert len(marker.read_text().split()) == 1  # the entry point ran exactly once
    finally:
        stop_platform(second)


def test_a_killed_job_process_fails_with_a_reason_and_the_pool_keeps_working(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    src = source_dir(tmp_path, "sleeper.py")
    marker = tmp_path / "runs.txt"
    training_id = create(platform, src, tmp_path / "model", seconds="120", marker=str(marker))
    wait_until(platform, training_id, {"RUNNING"})
    os.kill(int(wait_for_file(marker).split()[0]), signal.SIGKILL)
    body = wait_until(platform, training_id, ENDED, timeout=60)
    assert body["trainingStatusCode"] == "FAIL_TRAIN", body
    assert "killed by signal SIGKILL" in body["statusReason"]

    after = create(platform, src, tmp_path / "model-2", seconds="0")
    assert wait_until(platform, after, ENDED)["trainingStatusCode"] == "COMPLETE"


def test_a_killed_driver_is_settled_by_the_tick_and_takes_its_code_along(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    src = source_dir(tmp_path, "sleeper.py")
    marker = tmp_path / "runs.txt"
    training_id = create(platform, src, tmp_path / "model", seconds="120", marker=str(marker))
    wait_until(platform, training_id, {"RUNNING"})
    user_pid = int(wait_for_file(marker).split()[0])
    drivers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and p.info["cmdline"][-2:] == ["runners.training", training_id]
    ]
    assert len(drivers) == 1, drivers
    drivers[0].kill()

    body = wait_until(platform, training_id, ENDED, timeout=60)
    assert body["trainingStatusCode"] == "FAIL_TRAIN", body
    assert "without reporting" in body["statusReason"]
    deadline = time.monotonic() + 10
    while psutil.pid_exists(user_pid) and time.monotonic() < deadline:
        if psutil.Process(user_pid).status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.1)
    gone = not psutil.pid_exists(user_pid) or (
        psutil.Process(user_pid).status() == psutil.STATUS_ZOMBIE
    )
    assert gone, "the user's process outlived its driver"


def test_a_killed_process_on_one_node_fails_the_distributed_training_naming_it(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    src = source_dir(tmp_path, "sleeper.py")
    marker = tmp_path / "runs.txt"
    headers = platform.auth_headers
    create(platform, src, tmp_path / "warm", seconds="0")  # fills the catalog ids
    body = {
        "trainingName": unique("two-nodes"),
        "experimentName": "faults",
        "imageId": CATALOG_IDS["image"],
        "flavorId": CATALOG_IDS["flavor"],
        "instanceCount": 2,
        "sourceDirUri": f"file://{src}",
        "entryPoint": "sleeper.py",
        "hyperparameterList": [
            {"parameterName": "seconds", "parameterValue": "120"},
            {"parameterName": "marker", "parameterValue": str(marker)},
        ],
        "modelUploadUri": f"file://{tmp_path / 'model'}",
    }
    reply = requests.post(f"{platform.api_url}/trainings", json=body, headers=headers, timeout=30)
    assert reply.status_code == 201, reply.text
    training_id = reply.json()["training"]["trainingId"]
    wait_until(platform, training_id, {"RUNNING"}, timeout=90)
    deadline = time.monotonic() + 60
    while len(marker.read_text().split() if marker.exists() else []) < 2:
        assert time.monotonic() < deadline, "both nodes never started"
        time.sleep(0.1)
    pids = [int(p) for p in marker.read_text().split()]
    node_of = {
        pid: psutil.Process(pid).environ().get("EM_NODE_RANK") for pid in pids
    }  # which node each process is
    victim = next(pid for pid, rank in node_of.items() if rank == "1")
    os.kill(victim, signal.SIGKILL)

    ended = wait_until(platform, training_id, ENDED, timeout=60)
    assert ended["trainingStatusCode"] == "FAIL_TRAIN", ended
    assert "was killed by signal SIGKILL" in ended["statusReason"]
    assert "on node1;" in ended["statusReason"]
    survivor = next(pid for pid in pids if pid != victim)
    deadline = time.monotonic() + 15
    while psutil.pid_exists(survivor) and time.monotonic() < deadline:
        if psutil.Process(survivor).status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.1)
    assert not psutil.pid_exists(survivor) or (
        psutil.Process(survivor).status() == psutil.STATUS_ZOMBIE
    ), "the other node's process was left running"
