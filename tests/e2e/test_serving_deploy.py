"""Deploying a stage's pods on the session's Ray head through the Ray Jobs API, as the
control plane will: a scikit-learn iris model on two pods (detached actors with the
resources asked for), served by the real Python runtime; a pod whose runtime is killed
comes back; teardown ends them; an unreadable artifact fails the deployment with the reason."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psutil
import requests
from ray.job_submission import JobStatus, JobSubmissionClient

from tests.serving.models import iris_model
from tests.serving.torchserve_fixtures import iris_weights_dir

VERSICOLOR = [6.4, 3.2, 4.5, 1.5]


def run_job(ray_head: str, entrypoint: str, timeout: float = 240) -> dict[str, Any]:
    client = JobSubmissionClient(ray_head)
    job = client.submit_job(entrypoint=entrypoint)
    deadline = time.monotonic() + timeout
    while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        assert time.monotonic() < deadline, client.get_job_logs(job)
        time.sleep(0.5)
    logs = client.get_job_logs(job)
    lines = [line for line in logs.splitlines() if line.startswith("{")]
    assert lines, logs
    found: dict[str, Any] = json.loads(lines[-1])
    return found


def runtime_processes(port: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "serving.runtimes.python" in cmdline and str(port) in cmdline:
            found.append(proc)
    return found


def infer(url: str) -> requests.Response:
    return requests.post(
        f"{url}/v1/models/iris:predict", json={"instances": [VERSICOLOR]}, timeout=10
    )


def test_a_stage_deploys_ready_pods_that_recover_and_teardown_ends_them(
    ray_head: str, tmp_path: Path
) -> None:
    model_dir = iris_model(tmp_path / "iris")
    spec = {
        "stage": "stg-deploy-test",
        "models": [
            {
                "name": "iris",
                "framework": "SKLEARN",
                "artifactUri": f"file://{model_dir}",
                "pods": 2,
                "cpus": 0.5,
                "memoryBytes": 512 * 2**20,
                "parameters": [["log-level", "info"]],
            }
        ],
    }
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    try:
        deployed = run_job(ray_head, f"python -m serving.deploy deploy --spec {spec_file}")

        pods = deployed["routes"]["iris"]
        assert len(pods) == 2 and len(set(pods)) == 2, deployed
        for url in pods:
            assert infer(url).json() == {"predictions": [1]}
        port = int(pods[0].rsplit(":", 1)[1])
        (victim,) = runtime_processes(port)
        victim.kill()
        deadline = time.monotonic() + 60
        while True:  # the supervisor starts it again on the same port
            try:
                if infer(pods[0]).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the pod never came back"
            time.sleep(0.3)
        assert [p.pid for p in runtime_processes(port)] != [victim.pid]
    finally:
        stopped = run_job(ray_head, "python -m serving.deploy teardown --stage stg-deploy-test")
    assert stopped == {"stopped": 2}
    assert runtime_processes(port) == []


def test_an_unreadable_artifact_fails_the_deployment_and_leaves_no_pod(
    ray_head: str, tmp_path: Path
) -> None:
    spec = {
        "stage": "stg-broken",
        "models": [
            {"name": "gone", "framework": "SKLEARN", "artifactUri": f"file://{tmp_path}/none"}
        ],
    }
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))

    failed = run_job(ray_head, f"python -m serving.deploy deploy --spec {spec_file}")

    assert "pod stg-broken.gone.0" in failed["error"] and "nothing to download" in failed["error"]
    left = run_job(ray_head, "python -m serving.deploy teardown --stage stg-broken")
    assert left == {"stopped": 0}


def test_a_pytorch_stage_is_served_by_torchserve_on_a_ray_pod(
    ray_head: str, tmp_path: Path
) -> None:
    """Weights + model.py + handler.py (appendix 11): archived and served by a real
    TorchServe in the pod, reached at the node's address the deploy reports."""
    weights = iris_weights_dir(tmp_path / "iris-pt")
    spec = {
        "stage": "stg-torch",
        "models": [
            {
                "name": "iris",
                "framework": "PYTORCH",
                "artifactUri": f"file://{weights}",
                "cpus": 0.5,
                "memoryBytes": 1024 * 2**20,
            }
        ],
    }
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    try:
        deployed = run_job(ray_head, f"python -m serving.deploy deploy --spec {spec_file}")
        (pod,) = deployed["routes"]["iris"]
        answer = requests.post(
            f"{pod}/v2/models/iris/infer",
            json={
                "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": VERSICOLOR}]
            },
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [1]
    finally:
        stopped = run_job(ray_head, "python -m serving.deploy teardown --stage stg-torch")
    assert stopped == {"stopped": 1}
