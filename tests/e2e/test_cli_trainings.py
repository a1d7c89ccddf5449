"""The training commands of the ``openmaker`` CLI against the real platform, in child
processes: the NSML way (``run``, ``ps``, ``logs``, ``stop``) and the IBM Watson ML way
(``train``, ``list|show|delete trained-models``)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import uuid
import zipfile
from pathlib import Path
from typing import Any

import boto3
import requests

from tests.e2e.conftest import RunningPlatform, platform_env

CLI_TIMEOUT_S = 60
CREATED = re.compile(r"training ([0-9a-f-]{36}) \(")

TRAIN_SCRIPT = """\
import sys
from openmaker import job

hps = job.hyperparameters()
epochs = int(hps["epochs"])
for epoch in range(epochs):
    print(f"epoch {epoch} of {epochs}", flush=True)
    job.report(epoch, loss=1.0 / (epoch + 1))
    job.save(epoch)
print("a note on stderr", file=sys.stderr, flush=True)
(job.model_dir() / "model.txt").write_text("weights")
print("training done", flush=True)
"""

FAIL_SCRIPT = """\
print("about to fail", flush=True)
raise SystemExit("boom: the data is bad")
"""

SLEEP_SCRIPT = """\
import time
print("sleeping now", flush=True)
time.sleep(120)
"""


def cli_env(platform: RunningPlatform) -> dict[str, str]:
    env = platform_env(platform.home)
    env.update(
        OPENMAKER_URL=platform.base_url,
        OPENMAKER_APPKEY=platform.appkey,
        OPENMAKER_TOKEN=platform.token,
    )
    return env


def openmaker(
    platform: RunningPlatform, cwd: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openmaker", *args],
        cwd=cwd,
        env=cli_env(platform),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def project(tmp_path: Path, **scripts: str) -> Path:
    folder = tmp_path / f"proj-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    for name, text in scripts.items():
        (folder / f"{name}.py").write_text(text)
    return folder


def training(platform: RunningPlatform, training_id: str) -> dict[str, Any]:
    reply = requests.get(
        f"{platform.api_url}/trainings/{training_id}", headers=platform.auth_headers, timeout=10
    )
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()["training"]
    return body


def created_id(stderr: str) -> str:
    found = CREATED.search(stderr)
    assert found, stderr
    return found.group(1)


def test_run_follows_a_training_and_ps_and_logs_show_it(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    folder = project(tmp_path, main=TRAIN_SCRIPT)
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"skipped")

    done = openmaker(platform, folder, "run", "main.py", "--name", "cli-ok", "--", "--epochs", "2")
    training_id = created_id(done.stderr)
    listed = openmaker(platform, folder, "ps", "-a")
    running = openmaker(platform, folder, "ps")
    logged = openmaker(platform, folder, "logs", training_id)

    assert done.returncode == 0, done.stdout + done.stderr
    for line in ("[node0] epoch 0 of 2", "[node0] step=1 loss=0.5", "[node0] training done"):
        assert line in done.stdout.splitlines()
    assert "[node0] a note on stderr" in done.stderr.splitlines()
    assert "packed 1 file(s)" in done.stderr
    assert f"training {training_id} COMPLETE" in done.stderr
    row = next(line for line in listed.stdout.splitlines() if training_id in line)
    assert row.split()[:3] == [training_id, "cli-ok", "COMPLETE"]
    assert training_id not in running.stdout
    assert logged.returncode == 0, logged.stderr
    assert "[node0] epoch 1 of 2" in logged.stdout.splitlines()
    body = training(platform, training_id)
    assert body["experiment"]["experimentName"] == "nsml"
    assert body["hyperparameterList"] == [{"parameterName": "epochs", "parameterValue": "2"}]
    assert body["modelUploadUri"] == f"upload://{platform.appkey}/runs/{training_id}/model"
    assert platform.token not in done.stdout + done.stderr + listed.stdout + logged.stdout


def test_a_failing_entry_exits_1_with_the_reason(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    folder = project(tmp_path, main=FAIL_SCRIPT)

    done = openmaker(platform, folder, "run", "main.py")

    assert done.returncode == 1, done.stdout + done.stderr
    assert "[node0] about to fail" in done.stdout
    ended = next(line for line in done.stderr.splitlines() if "ended FAIL_TRAIN" in line)
    assert "exit code 1" in ended and "boom: the data is bad" in ended


def test_detach_then_stop_and_a_running_training_cannot_be_deleted(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    folder = project(tmp_path, sleeper=SLEEP_SCRIPT)

    detached = openmaker(platform, folder, "run", "sleeper.py", "--detach")
    training_id = detached.stdout.strip()
    refused = openmaker(platform, folder, "delete", "trained-models", training_id)
    stopped = openmaker(platform, folder, "stop", training_id, "--wait")

    assert detached.returncode == 0, detached.stderr
    assert re.fullmatch(r"[0-9a-f-]{36}", training_id), detached.stdout
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: training ")
    assert "stop it and delete it when it has ended" in refused.stderr
    assert stopped.returncode == 0, stopped.stderr
    assert training(platform, training_id)["trainingStatusCode"] == "STOPPED"


def test_ctrl_c_stops_the_training_and_exits_130(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    folder = project(tmp_path, sleeper=SLEEP_SCRIPT)
    err_path = tmp_path / "stderr.txt"
    with err_path.open("w") as err_file:
        child = subprocess.Popen(
            [sys.executable, "-m", "openmaker", "run", "sleeper.py"],
            cwd=folder,
            env=cli_env(platform),
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
        )
    assert child.stdout is not None
    lines: queue.Queue[str] = queue.Queue()

    def read_lines() -> None:
        for line in child.stdout or []:
            lines.put(line)

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    try:
        first = ""
        while not first.startswith("[node0]"):
            first = lines.get(timeout=30)
        assert first == "[node0] sleeping now\n"
        child.send_signal(signal.SIGINT)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        reader.join(timeout=5)
    err = err_path.read_text()

    assert child.returncode == 130, err
    training_id = created_id(err)
    assert f"interrupted: stopping training {training_id}" in err
    assert f"training {training_id} STOPPED" in err
    assert training(platform, training_id)["trainingStatusCode"] == "STOPPED"


WML_TRAIN = """\
import json, os, sys

rows = open(os.path.join(os.environ["DATA_DIR"], "train.csv")).read().splitlines()
print(f"read {len(rows) - 1} rows, lr={sys.argv[sys.argv.index('--lr') + 1]}", flush=True)
with open(os.path.join(os.environ["RESULT_DIR"], "model.json"), "w") as out:
    json.dump({"rows": len(rows) - 1}, out)
"""

WML_MANIFEST = """\
model_definition:
  framework:
    name: pytorch
    version: "2.0"
  name: csv-model
  author:
    name: WML User
    email: wmluser@example.com
  description: reads a CSV from the data bucket
  execution:
    command: python3 train.py --data ${{DATA_DIR}}/train.csv
      --lr 0.01
    resource: small
training_data_reference:
- connection:
    endpoint_url: http://cos.example
    aws_access_key_id: manifest-key-id
    aws_secret_access_key: manifest-secret-never-sent
  source:
    bucket: {data}
    type: s3
training_results_reference:
  connection:
    endpoint_url: http://cos.example
    aws_access_key_id: manifest-key-id
    aws_secret_access_key: manifest-secret-never-sent
  target:
    bucket: {results}
    type: s3
"""


def test_the_ibm_way_trains_from_a_manifest_into_the_results_bucket(
    platform: RunningPlatform, s3_endpoint: str, tmp_path: Path
) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    data, results = f"wml-data-{uuid.uuid4().hex[:8]}", f"wml-results-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=data)
    s3.create_bucket(Bucket=results)
    s3.put_object(Bucket=data, Key="train.csv", Body=b"a,label\n1,0\n2,1\n3,0\n")
    with zipfile.ZipFile(tmp_path / "model.zip", "w") as archive:
        archive.writestr("train.py", WML_TRAIN)
    (tmp_path / "manifest.yml").write_text(WML_MANIFEST.format(data=data, results=results))

    trained = openmaker(platform, tmp_path, "train", "model.zip", "manifest.yml", "--wait")
    found = re.search(r"Model-ID is '([0-9a-f-]{36})'", trained.stdout)
    assert found, trained.stdout + trained.stderr
    model_id = found.group(1)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=results)["Contents"])
    log = s3.get_object(Bucket=results, Key=f"{model_id}/logs/training.log")["Body"].read()
    listed = openmaker(platform, tmp_path, "list", "trained-models")
    shown = openmaker(platform, tmp_path, "show", "trained-models", model_id)
    stored = json.dumps(training(platform, model_id))
    deleted = openmaker(platform, tmp_path, "delete", "trained-models", model_id)
    gone = openmaker(platform, tmp_path, "show", "trained-models", model_id)

    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert trained.stdout.startswith("Starting to train ...\n")
    assert "credentials in training_data_reference[0].connection" in trained.stderr
    assert "manifest-secret-never-sent" not in trained.stdout + trained.stderr
    assert f"training {model_id} COMPLETE" in trained.stderr
    assert "manifest-" not in stored and "cos.example" not in stored
    assert keys == [f"{model_id}/logs/training.log", f"{model_id}/model/model.json"]
    assert b"read 3 rows, lr=0.01" in log
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if model_id in line)
    assert row.split()[1:4] == ["csv-model", model_id, "COMPLETE"]
    assert shown.returncode == 0, shown.stderr
    assert "State          COMPLETE" in shown.stdout
    assert f"s3://{results}/{model_id}/model" in shown.stdout
    assert f"s3://{results}/{model_id}/logs/training.log" in shown.stdout
    assert deleted.returncode == 0, deleted.stderr
    assert "Delete trained-models successful" in deleted.stdout
    assert gone.returncode == 1 and gone.stderr.startswith("error: ")
