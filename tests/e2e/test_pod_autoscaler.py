"""A stage's controller on the session's Ray head: the pod autoscaler adds a pod under load
and takes it away when the load is gone (each decision in the stage's log), and a pod whose
actor is killed is started again, the gateway routing only to ready pods meanwhile. The
gateway's counts become the stage's API statistics and each call a line of its log.

The platform runs with ``OPENMAKER_POD_WATCH_SECONDS=1`` and
``OPENMAKER_SCALE_DOWN_SECONDS=4`` (tests/e2e/conftest.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import requests

from tests.e2e.conftest import RunningPlatform
from tests.e2e.test_sdk_trainings import unique
from tests.serving.models import iris_model

VERSICOLOR = [6.4, 3.2, 4.5, 1.5]


def wait_for(
    what: str, check: Callable[[], Any], timeout: float = 120, why: Callable[[], Any] = str
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {why()}"
        time.sleep(0.5)


def api(platform: RunningPlatform, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    reply = requests.request(
        method, f"{platform.api_url}{path}", headers=platform.auth_headers, timeout=30, **kwargs
    )
    assert reply.status_code < 300, reply.text
    body: dict[str, Any] = reply.json()
    return body


def endpoint_model(platform: RunningPlatform, stage_id: str) -> dict[str, Any]:
    found = api(platform, "GET", "/endpoint-models", params={"endpointStageId": stage_id})
    (resource,) = found["endpointModelList"]
    return resource


def runtimes(model: str) -> list[psutil.Process]:
    """The Python runtime processes serving ``model`` (its pods)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "serving.runtimes.python" in (proc.info["cmdline"] or []) and (
                proc.environ().get("MODEL_NAME") == model
            ):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def active_iris(platform: RunningPlatform, name: str, tmp_path: Path) -> dict[str, Any]:
    """A scikit-learn iris model, ACTIVE."""
    model_dir = iris_model(tmp_path / "iris")
    body = {
        "modelName": name,
        "modelFormatCode": "SKLEARN",
        "modelUploadUri": f"file://{model_dir}",
    }
    model: dict[str, Any] = api(platform, "POST", "/models", json=body)["model"]
    wait_for(
        "the model",
        lambda: (
            api(platform, "GET", f"/models/{model['modelId']}")["model"]["modelStatusCode"]
            == "ACTIVE"
        ),
    )
    return model


def stage_log(platform: RunningPlatform, stage_id: str) -> list[dict[str, Any]]:
    """The stage controller's lines (the pods' own lines are under their own sources)."""
    found = api(
        platform,
        "GET",
        f"/endpoint-stages/{stage_id}/logs",
        params={"page": 1, "source": "autoscaler"},
    )
    records: list[dict[str, Any]] = found["endpointStageLog"]["logList"]
    return records


def test_the_pod_autoscaler_scales_out_and_in_and_a_killed_pod_comes_back(
    platform: RunningPlatform, ray_head: str, tmp_path: Path
) -> None:
    gateway = json.loads((platform.home / "gateway.json").read_text())
    name = unique("iris")
    model = active_iris(platform, name, tmp_path)
    created = api(
        platform,
        "POST",
        "/endpoints",
        json={
            "endpointName": unique("scaling"),
            "flavorId": "9bd2692e-c998-5f30-b305-0bd7de15bdd0",  # m2.c1m2
            "useLog": True,
            "endpointModelResourceList": [
                {
                    "modelId": model["modelId"],
                    "resourceOptionDetail": {"cpu": "0.25", "memory": "512Mi"},
                    "podCount": 1,
                    "podAutoScaleEnable": True,
                    "scaleMetricCode": "CPU",
                    "scaleMetricTarget": 20,  # of 0.25 core: idle pods stay well under
                    "maxPodCount": 2,
                    "apigwResourceUri": "/inference",
                }
            ],
        },
    )["endpoint"]
    endpoint_id = created["endpointId"]
    stage = wait_for(
        "the stage",
        lambda: (
            (s := api(platform, "GET", f"/endpoints/{endpoint_id}")["endpoint"]["defaultStage"])
            and s["endpointStageStatusCode"] == "ACTIVE"
            and s
        ),
        timeout=240,
    )
    stage_id = stage["endpointStageId"]
    resource = endpoint_model(platform, stage_id)
    assert resource["podAutoScaleEnable"] is True and resource["maxPodCount"] == 2
    assert resource["runningPodCount"] == 1
    url = f"https://{stage['apigwStageUrl']}/v1/models/{name}:predict"

    wait_for(  # the gateway takes a new stage's routes within a second
        "the gateway to serve the stage",
        lambda: (
            requests.post(
                url, json={"instances": [VERSICOLOR]}, verify=gateway["ca"], timeout=10
            ).status_code
            == 200
        ),
        timeout=30,
    )
    own = requests.post(  # the model's own resource path, as the SDK calls it when set
        resource["apigwEndpointUri"],
        json={"instances": [VERSICOLOR]},
        verify=gateway["ca"],
        timeout=10,
    )
    assert own.status_code == 200 and own.json() == {"predictions": [1]}, own.text
    stop = threading.Event()
    failures: list[str] = []

    def load() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    answer = session.post(
                        url, json={"instances": [VERSICOLOR]}, verify=gateway["ca"], timeout=10
                    )
                    if answer.status_code != 200:
                        failures.append(f"{answer.status_code} {answer.text[:200]}")
                except requests.RequestException as exc:
                    failures.append(repr(exc))

    workers = [threading.Thread(target=load) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        wait_for(
            "a second pod",
            lambda: endpoint_model(platform, stage_id)["runningPodCount"] == 2,
            timeout=120,
            why=lambda: [r["body"] for r in stage_log(platform, stage_id)][-20:],
        )
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert failures == [], failures[:3]  # the new pod takes requests once it is ready

    wait_for(
        "back to one pod",
        lambda: endpoint_model(platform, stage_id)["runningPodCount"] == 1,
        timeout=120,
        why=lambda: [r["body"] for r in stage_log(platform, stage_id)][-20:],
    )
    lines = wait_for(  # the log is written within a second
        "the scale-down line",
        lambda: (
            (found := [r["body"] for r in stage_log(platform, stage_id)])
            and any("scale down" in line and "2 -> 1 pods" in line for line in found)
            and found
        ),
        timeout=20,
        why=lambda: [r["body"] for r in stage_log(platform, stage_id)],
    )
    assert any("scale up" in line and "1 -> 2 pods" in line and "CPU" in line for line in lines)
    # the stage's node, asked of Ray's autoscaler (a one-machine cluster has none to add)
    assert any("1 node(s) for the stage: asked Ray's autoscaler for 1 x" in line for line in lines)

    # the gateway's counts reach the stage's API statistics, and each call its log
    stats = wait_for(
        "the API statistics",
        lambda: (
            (found := api(platform, "GET", f"/endpoint-stages/{stage_id}/api-statistics"))[
                "apiStatistics"
            ]["total"]["calls"]
            > 100
            and found["apiStatistics"]
        ),
        timeout=30,
    )
    assert stats["total"]["status2xx"] == stats["total"]["calls"]
    assert stats["total"]["latencyP50Ms"] is not None and stats["series"]
    calls = api(
        platform,
        "GET",
        "/logs",
        params={
            "category": "easymaker.inference",
            "endpointStageId": stage_id,
            "text": "inferenceId",  # the gateway's line per call, not the pods' own lines
            "limit": 5,
        },
    )["logList"]
    gateway_calls = [c for c in calls if c["source"] == "gateway"]
    assert gateway_calls, calls
    assert all(
        c["inferenceId"] and c["modelName"] == name and c["endpointId"] == endpoint_id
        for c in gateway_calls
    )

    # a pod whose worker dies (killed) is started again under the same name
    (runtime,) = runtimes(name)
    worker = runtime.parent()
    assert worker is not None and "ray::" in " ".join(worker.cmdline())
    worker.kill()
    wait_for(
        "the pod to be replaced",
        lambda: any("is gone" in r["body"] for r in stage_log(platform, stage_id)),
        timeout=60,
    )
    wait_for(
        "the replaced pod to serve",
        lambda: (
            [p.pid for p in runtimes(name)] not in ([], [runtime.pid])
            and requests.post(
                url, json={"instances": [VERSICOLOR]}, verify=gateway["ca"], timeout=10
            ).status_code
            == 200
            and endpoint_model(platform, stage_id)["runningPodCount"] == 1
        ),
        timeout=120,
    )

    api(platform, "DELETE", f"/endpoints/{endpoint_id}")


def test_a_stage_whose_pods_vanish_from_ray_is_deployed_again(
    platform: RunningPlatform, ray_head: str, tmp_path: Path
) -> None:
    """As after a Ray restart: the stage's controller and pods are gone while the database
    says ACTIVE. The tick (OPENMAKER_LOST_PODS_GRACE_SECONDS=5) deploys it again."""
    from chalicelib.dispatch.ray_jobs import RayJobsBackend
    from tests.e2e.test_serving_deploy import run_job

    gateway = json.loads((platform.home / "gateway.json").read_text())
    name = unique("iris")
    model = active_iris(platform, name, tmp_path)
    endpoint = api(
        platform,
        "POST",
        "/endpoints",
        json={
            "endpointName": unique("lost"),
            "flavorId": "9bd2692e-c998-5f30-b305-0bd7de15bdd0",  # m2.c1m2
            "endpointModelResourceList": [
                {"modelId": model["modelId"], "resourceOptionDetail": {"cpu": "0.25"}}
            ],
        },
    )["endpoint"]
    endpoint_id = endpoint["endpointId"]
    stage_id = endpoint["defaultStage"]["endpointStageId"]

    def status() -> str:
        found: str = api(platform, "GET", f"/endpoint-stages/{stage_id}")["endpointStage"][
            "endpointStageStatusCode"
        ]
        return found

    wait_for("the stage", lambda: status() == "ACTIVE", timeout=240)
    url = f"https://{endpoint['defaultStage']['apigwStageUrl']}/v1/models/{name}:predict"

    def predicts() -> bool:
        answer = requests.post(
            url, json={"instances": [VERSICOLOR]}, verify=gateway["ca"], timeout=10
        )
        return answer.status_code == 200

    wait_for("a prediction", predicts, timeout=30)
    alive = RayJobsBackend(ray_head).actors("openmaker-serving")
    assert {f"{stage_id}.controller", f"{stage_id}.{name}.0"} <= alive

    assert run_job(ray_head, f"python -m serving.deploy teardown --stage {stage_id}") == {
        "stopped": 1
    }
    assert f"{stage_id}.controller" not in RayJobsBackend(ray_head).actors("openmaker-serving")

    seen = wait_for("the redeploy", lambda: status() == "DEPLOY_IN_PROGRESS" or None, timeout=60)
    assert seen
    wait_for("the stage back", lambda: status() == "ACTIVE", timeout=240)
    wait_for("a prediction again", predicts, timeout=30)
    api(platform, "DELETE", f"/endpoints/{endpoint_id}")
