"""Trainings through the unmodified ``easymaker`` SDK, run on the session's real Ray head.

Each test submits real code (``tests/e2e/jobs/``) and reads back what it did: the artifacts
at the upload URIs, the status and its reason, and the stored logs.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from easymaker.common.base_model import easymaker_base_model
from easymaker.common.parameter import Parameter
from easymaker.training.components import Dataset

from tests.e2e.conftest import RunningPlatform

JOBS = Path(__file__).parent / "jobs"
CPU_IMAGE = "Ubuntu 22.04 CPU PyTorch Training"
ENDED = {"COMPLETE", "FAIL_TRAIN", "CREATE_FAILED", "STOPPED"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class _QuickSleep:
    """The SDK's ``wait()`` polls every 10 s; the same loop at 0.2 s keeps the test short."""

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, 0.2))


def source_dir(tmp_path: Path, *scripts: str) -> Path:
    folder = tmp_path / unique("src")
    folder.mkdir()
    for script in scripts:
        shutil.copy(JOBS / script, folder / script)
    return folder


def training(platform: RunningPlatform, training_id: str) -> dict[str, Any]:
    reply = requests.get(
        f"{platform.api_url}/trainings/{training_id}", headers=platform.auth_headers, timeout=10
    )
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()["training"]
    return body


def wait_until(
    platform: RunningPlatform, training_id: str, statuses: set[str], timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        body = training(platform, training_id)
        if not seen or seen[-1] != body["trainingStatusCode"]:
            seen.append(body["trainingStatusCode"])
        if body["trainingStatusCode"] in statuses:
            body["_seen"] = seen
            return body
        time.sleep(0.2)
    raise AssertionError(f"training {training_id} went {seen}, never {statuses}")


def logs(platform: RunningPlatform, training_id: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    cursor = None
    while True:
        reply = requests.get(
            f"{platform.api_url}/trainings/{training_id}/logs",
            params={"cursor": cursor} if cursor else {},
            headers=platform.auth_headers,
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        page = reply.json()["trainingLog"]
        lines += page["logList"]
        if not page["logList"]:
            return lines
        cursor = page["nextCursor"]


def monitoring_points(
    platform: RunningPlatform, training_id: str, timeout: float = 15
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = requests.get(
            f"{platform.api_url}/trainings/{training_id}/monitoring",
            headers=platform.auth_headers,
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        nodes = reply.json()["monitoring"]["nodeList"]
        if nodes and len(nodes[0]["points"]) >= 2:
            points: list[dict[str, Any]] = nodes[0]["points"]
            return points
        time.sleep(0.2)
    raise AssertionError(f"no monitoring samples for {training_id}")


@pytest.fixture
def experiment_id(sdk: Any) -> str:
    return str(sdk.Experiment().create(experiment_name=unique("exp")).experiment_id)


def run(sdk: Any, experiment_id: str, **kwargs: Any) -> Any:
    options: dict[str, Any] = {
        "training_name": unique("train"),
        "image_name": CPU_IMAGE,
        "instance_type_name": "m2.c1m2",
        "experiment_id": experiment_id,
        "wait": False,
    }
    options.update(kwargs)
    return sdk.Training().run(**options)


def test_sdk_run_waits_to_complete_and_the_job_contract_holds(
    sdk: Any,
    experiment_id: str,
    platform: RunningPlatform,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(easymaker_base_model, "time", _QuickSleep)
    src = source_dir(tmp_path, "contract.py")
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "train" / "part-0.csv").write_text("a,label\n1,0\n")
    (data / "valid.csv").write_text("a,label\n2,1\n")
    checkpoint_in = tmp_path / "ckpt-in"
    checkpoint_in.mkdir()
    (checkpoint_in / "epoch-3.pt").write_bytes(b"old")
    out = tmp_path / "out"

    done = sdk.Training().run(
        training_name=unique("contract"),
        image_name=CPU_IMAGE,
        instance_type_name="m2.c1m2",
        experiment_id=experiment_id,
        source_dir_uri=f"file://{src}",
        entry_point="contract.py",
        hyperparameter_list=[
            Parameter(parameter_name="learning-rate", parameter_value="0.01"),
            Parameter(parameter_name="epochs", parameter_value="3"),
        ],
        dataset_list=[
            Dataset(dataset_name="train", data_uri=f"file://{data / 'train'}"),
            Dataset(dataset_name="valid-set", data_uri=f"file://{data / 'valid.csv'}"),
        ],
        check_point_input_uri=f"file://{checkpoint_in}",
        check_point_upload_uri=f"file://{out / 'ckpt'}",
        model_upload_uri=f"file://{out / 'model'}",
        timeout_hours=1,
        wait=True,
    )

    assert done.training_status_code == "COMPLETE"
    seen = json.loads((out / "model" / "contract.json").read_text())
    assert seen["argv"] == ["--learning-rate", "0.01", "--epochs", "3"]
    env = seen["env"]
    assert env["EM_HP_LEARNING_RATE"] == "0.01" and env["EM_HP_EPOCHS"] == "3"
    assert json.loads(env["EM_HPS"]) == {"learning-rate": "0.01", "epochs": "3"}
    assert seen["dataset_files"] == {"TRAIN": ["part-0.csv"], "VALID_SET": ["valid.csv"]}
    assert [d["datasetName"] for d in json.loads(env["EM_DATASETS"])] == ["train", "valid-set"]
    assert seen["checkpoint_input"] == ["epoch-3.pt"]
    assert env["EM_ENTRY_POINT"] == "contract.py" and seen["cwd"] == env["EM_SOURCE_DIR"]
    assert env["EM_APPKEY"] == platform.appkey and env["EM_REGION"] == "kr1"
    for name in ("EM_MODEL_DIR", "EM_CHECKPOINT_DIR", "EM_TENSORBOARD_LOG_DIR"):
        assert Path(env[name]).is_absolute(), name
    assert seen["secrets_visible"] == []  # the runner's settings stay out of the user's code
    assert (out / "model" / "weights" / "w.bin").stat().st_size == 1024
    assert (out / "ckpt" / "ckpt-0001").read_text() == "checkpoint"

    body = training(platform, done.training_id)
    assert body["elapsedTimeSeconds"] is not None and body["elapsedTimeSeconds"] >= 0
    assert body["startedDatetime"] and body["endedDatetime"]
    assert body["experiment"]["experimentId"] == experiment_id
    bodies = [line["body"] for line in logs(platform, done.training_id)]
    assert "step=2 loss=0.333" in bodies and "contract written" in bodies
    listed = sdk.Training.get_list()
    assert done.training_id in {t.training_id for t in listed}


def test_a_non_zero_exit_fails_with_the_exit_code_and_last_lines(
    sdk: Any, experiment_id: str, platform: RunningPlatform, tmp_path: Path
) -> None:
    src = source_dir(tmp_path, "fail.py")
    started = run(
        sdk,
        experiment_id,
        source_dir_uri=f"file://{src}",
        entry_point="fail.py",
        model_upload_uri=f"file://{tmp_path / 'model'}",
    )
    body = wait_until(platform, started.training_id, ENDED)
    assert body["trainingStatusCode"] == "FAIL_TRAIN", body
    assert "exit code 3" in body["statusReason"]
    assert "bad column 'age'" in body["statusReason"]
    assert not (tmp_path / "model").exists()  # nothing published for a failed run
    stderr = [line for line in logs(platform, started.training_id) if line["stream"] == "stderr"]
    assert [line["body"] for line in stderr] == ["something went wrong: bad column 'age'"]


def test_memory_beyond_the_flavor_is_an_out_of_memory_failure(
    sdk: Any, experiment_id: str, platform: RunningPlatform, tmp_path: Path
) -> None:
    src = source_dir(tmp_path, "hog.py")
    started = run(
        sdk,
        experiment_id,
        source_dir_uri=f"file://{src}",
        entry_point="hog.py",
        model_upload_uri=f"file://{tmp_path / 'model'}",
    )
    body = wait_until(platform, started.training_id, ENDED)
    assert body["trainingStatusCode"] == "FAIL_TRAIN", body
    assert "out of memory" in body["statusReason"] and "m2.c1m2" in body["statusReason"]


def test_stop_while_running_ends_stopped_and_kills_the_code(
    sdk: Any, experiment_id: str, platform: RunningPlatform, tmp_path: Path
) -> None:
    src = source_dir(tmp_path, "sleeper.py")
    marker = tmp_path / "runs.txt"
    started = run(
        sdk,
        experiment_id,
        source_dir_uri=f"file://{src}",
        entry_point="sleeper.py",
        hyperparameter_list=[
            Parameter(parameter_name="seconds", parameter_value="120"),
            Parameter(parameter_name="marker", parameter_value=str(marker)),
        ],
        model_upload_uri=f"file://{tmp_path / 'model'}",
    )
    wait_until(platform, started.training_id, {"RUNNING"})
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = int(marker.read_text().split()[0])
    charts = monitoring_points(platform, started.training_id)
    assert charts and all(p["memoryBytes"] > 0 for p in charts)  # sampled every 0.5 s here
    sdk.Training(started.training_id).stop()
    body = wait_until(platform, started.training_id, ENDED, timeout=60)
    assert body["trainingStatusCode"] == "STOPPED"
    assert "STOP_IN_PROGRESS" in body["_seen"]
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not (tmp_path / "model" / "done.txt").exists()
    refused = requests.put(
        f"{platform.api_url}/trainings/{started.training_id}/stop",
        headers=platform.auth_headers,
        timeout=10,
    )
    assert refused.status_code == 409


def test_a_missing_source_or_entry_point_is_create_failed(
    sdk: Any, experiment_id: str, platform: RunningPlatform, tmp_path: Path
) -> None:
    missing = run(
        sdk,
        experiment_id,
        source_dir_uri=f"file://{tmp_path / 'nowhere'}",
        entry_point="train.py",
        model_upload_uri=f"file://{tmp_path / 'model'}",
    )
    src = source_dir(tmp_path, "fail.py")
    no_entry = run(
        sdk,
        experiment_id,
        source_dir_uri=f"file://{src}",
        entry_point="train.py",
        model_upload_uri=f"file://{tmp_path / 'model'}",
    )
    first = wait_until(platform, missing.training_id, ENDED)
    second = wait_until(platform, no_entry.training_id, ENDED)
    assert first["trainingStatusCode"] == "CREATE_FAILED"
    assert "nothing to download" in first["statusReason"]
    assert second["trainingStatusCode"] == "CREATE_FAILED"
    assert "entry point train.py not found" in second["statusReason"]


def test_requirements_install_into_a_cached_environment_of_the_job(
    sdk: Any, experiment_id: str, platform: RunningPlatform, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    wheel = build_wheel(tmp_path / "wheels", f"om_probe_{uuid.uuid4().hex[:6]}")
    (src / "requirements.txt").write_text(f"{wheel}\n")
    module = wheel.name.split("-")[0]
    (src / "train.py").write_text(
        f"import os, {module}, sys\n"
        f"open(os.path.join(os.environ['EM_MODEL_DIR'], 'which.txt'), 'w')"
        f".write({module}.VALUE + ' ' + sys.executable)\n"
    )
    ids = []
    for _ in range(2):
        started = run(
            sdk,
            experiment_id,
            source_dir_uri=f"file://{src}",
            entry_point="train.py",
            model_upload_uri=f"file://{tmp_path / 'model'}",
        )
        body = wait_until(platform, started.training_id, ENDED, timeout=240)
        assert body["trainingStatusCode"] == "COMPLETE", body
        ids.append(started.training_id)
    value, python = (tmp_path / "model" / "which.txt").read_text().split(" ")
    assert value == "probe"
    assert str(platform.home / "envs") in python  # not the platform's own interpreter
    first, second = ([line["body"] for line in logs(platform, i)] for i in ids)
    assert any("creating an environment" in line for line in first)
    assert any("reusing the environment" in line for line in second)


def build_wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel (no index, no build backend needed to install it)."""
    import base64
    import hashlib
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-0.1-py3-none-any.whl"
    files = {
        f"{name}/__init__.py": b'VALUE = "probe"\n',
        f"{name}-0.1.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n".encode()
        ),
        f"{name}-0.1.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for arcname, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{arcname},sha256={digest},{len(data)}")
    record.append(f"{name}-0.1.dist-info/RECORD,,")
    with zipfile.ZipFile(path, "w") as archive:
        for arcname, data in files.items():
            archive.writestr(arcname, data)
        archive.writestr(f"{name}-0.1.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def test_the_built_in_algorithm_trains_from_hyperparameters_and_a_dataset(
    sdk: Any, experiment_id: str, platform: RunningPlatform, tmp_path: Path
) -> None:
    rows = tmp_path / "train.csv"
    rng = random.Random(0)
    with rows.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x1", "x2", "label"])
        for index in range(200):
            label = index % 2
            writer.writerow([rng.gauss(label * 4, 1), rng.gauss(label * 4, 1), label])
    started = run(
        sdk,
        experiment_id,
        algorithm_name="sklearn_classifier",
        hyperparameter_list=[Parameter(parameter_name="n_estimators", parameter_value="20")],
        dataset_list=[Dataset(dataset_name="train", data_uri=f"file://{rows}")],
        model_upload_uri=f"file://{tmp_path / 'model'}",
    )
    body = wait_until(platform, started.training_id, ENDED, timeout=180)
    assert body["trainingStatusCode"] == "COMPLETE", body
    assert body["algorithm"]["algorithmName"] == "sklearn_classifier"
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert (tmp_path / "model" / "model.joblib").stat().st_size > 0
    assert any("accuracy=" in line["body"] for line in logs(platform, started.training_id))
    assert metrics


def test_two_nodes_by_two_processes_train_one_ddp_model(
    sdk: Any, experiment_id: str, platform: RunningPlatform, tmp_path: Path
) -> None:
    src = source_dir(tmp_path, "ddp_train.py")
    started = run(
        sdk,
        experiment_id,
        instance_type_name="m2.c2m4",
        source_dir_uri=f"file://{src}",
        entry_point="ddp_train.py",
        hyperparameter_list=[Parameter(parameter_name="steps", parameter_value="4")],
        distributed_node_count=2,
        nproc_per_node=2,
        use_torchrun=True,
        model_upload_uri=f"file://{tmp_path / 'model'}",
    )
    body = wait_until(platform, started.training_id, ENDED, timeout=240)
    assert body["trainingStatusCode"] == "COMPLETE", body
    summary = json.loads((tmp_path / "model" / "summary.json").read_text())
    assert summary["world_size"] == 4
    assert summary["rank_sum"] == 0 + 1 + 2 + 3  # every process joined the all-reduce
    assert summary["node_count"] == "2"
    assert len(summary["tf_config"]["cluster"]["worker"]) == 2
    assert (tmp_path / "model" / "model.pt").stat().st_size > 0
    sources = {line["source"] for line in logs(platform, started.training_id)}
    assert {"node0", "node1"} <= sources


def test_a_flavor_no_node_of_the_cluster_can_hold_is_create_failed(
    sdk: Any, experiment_id: str, platform: RunningPlatform, tmp_path: Path
) -> None:
    src = source_dir(tmp_path, "fail.py")
    started = run(
        sdk,
        experiment_id,
        image_name="Ubuntu 22.04 GPU PyTorch Training",
        instance_type_name="g2.t4.c8m64",  # the session's Ray head has 4 CPUs and no GPU
        source_dir_uri=f"file://{src}",
        entry_point="fail.py",
        model_upload_uri=f"file://{tmp_path / 'model'}",
    )
    body = wait_until(platform, started.training_id, ENDED, timeout=30)
    assert body["trainingStatusCode"] == "CREATE_FAILED", body
    assert "no capacity for flavor g2.t4.c8m64" in body["statusReason"]
    assert "0 GPU" in body["statusReason"]  # what the largest node offers
