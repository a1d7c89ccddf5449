"""An endpoint through the unmodified ``easymaker`` SDK: a scikit-learn model, an endpoint
whose default stage the platform deploys as a pod on the session's Ray head, and
``Endpoint.predict`` over HTTPS through the platform's gateway (its own CA)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from easymaker.common.base_model import easymaker_base_model
from easymaker.endpoint.components import EndpointModelResource, ResourceOptionDetail

from tests.e2e.conftest import RunningPlatform
from tests.e2e.test_sdk_trainings import _QuickSleep, unique
from tests.serving.models import iris_model

VERSICOLOR = [6.4, 3.2, 4.5, 1.5]


def test_an_sdk_endpoint_serves_predictions_over_https_and_is_deleted(
    sdk: Any, platform: RunningPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(easymaker_base_model, "time", _QuickSleep)
    gateway = json.loads((platform.home / "gateway.json").read_text())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", gateway["ca"])
    model_dir = iris_model(tmp_path / "iris")
    model = sdk.Model().create(
        model_name=unique("iris"),
        model_format_code="SKLEARN",
        model_upload_uri=f"file://{model_dir}",
        wait=True,
    )

    endpoint = sdk.Endpoint().create(
        endpoint_name=unique("iris-ep"),
        endpoint_model_resource_list=[
            EndpointModelResource(
                model_id=model.model_id,
                resource_option_detail=ResourceOptionDetail(cpu="0.5", memory="1Gi"),
            )
        ],
        instance_type_name="m2.c1m2",
        wait=True,
    )

    assert endpoint.endpoint_status_code == "ACTIVE"
    stage = endpoint.default_stage
    assert stage.endpoint_stage_status_code == "ACTIVE"
    assert stage.apigw_stage_url.startswith(gateway["url"].removeprefix("https://"))
    deadline = time.monotonic() + 30  # the gateway takes the new routes within a second
    while True:
        answer = endpoint.predict(model.model_id, json={"instances": [VERSICOLOR]})
        if answer.get("predictions") is not None or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert answer == {"predictions": [1]}
    v2 = endpoint.predict(
        model.model_id,
        json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": VERSICOLOR}]},
    )
    assert v2["outputs"][0]["data"] == [1]
    wrong = requests.post(
        f"https://{stage.apigw_stage_url}/v2/models/{model.model_name}/infer",
        json={"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
        timeout=10,
    )
    assert wrong.status_code == 400  # the runtime's answer through the gateway

    sdk.Endpoint.delete_by_id(endpoint.endpoint_id)
    gone = requests.get(
        f"{platform.api_url}/endpoints/{endpoint.endpoint_id}",
        headers=platform.auth_headers,
        timeout=10,
    )
    assert gone.status_code == 404
    deadline = time.monotonic() + 30
    while True:  # the routes go at once; the teardown job ends the pod
        reply = requests.post(
            f"https://{stage.apigw_stage_url}/v1/models/{model.model_name}/predict",
            json={"instances": [VERSICOLOR]},
            timeout=10,
        )
        if reply.status_code == 404 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert reply.status_code == 404 and "no endpoint stage" in reply.json()["error"]
    model.delete()


def runtime_ports() -> set[int]:
    ports = set()
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "serving.runtimes.python" in cmdline and "--http_port" in cmdline:
            ports.add(int(cmdline[cmdline.index("--http_port") + 1]))
    return ports


def test_changing_the_default_stage_under_load_fails_no_request(
    sdk: Any, platform: RunningPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(easymaker_base_model, "time", _QuickSleep)
    gateway = json.loads((platform.home / "gateway.json").read_text())
    model_dir = iris_model(tmp_path / "iris")
    model = sdk.Model().create(
        model_name=unique("iris"),
        model_format_code="SKLEARN",
        model_upload_uri=f"file://{model_dir}",
        wait=True,
    )
    resources = [
        EndpointModelResource(
            model_id=model.model_id,
            resource_option_detail=ResourceOptionDetail(cpu="0.25", memory="512Mi"),
        )
    ]
    endpoint = sdk.Endpoint().create(
        endpoint_name=unique("switch"),
        endpoint_model_resource_list=resources,
        instance_type_name="m2.c1m2",
        wait=True,
    )
    old_stage = endpoint.default_stage.endpoint_stage_id
    next_stage = sdk.EndpointStage().create(
        stage_name="next",
        endpoint_id=endpoint.endpoint_id,
        instance_type_name="m2.c1m2",
        endpoint_model_resource_list=resources,
        wait=True,
    )
    table = requests.get(f"{gateway['adminUrl']}/routes", timeout=5).json()["stages"]
    deadline = time.monotonic() + 30
    while next_stage.endpoint_stage_id not in table:  # the gateway has polled the new stage
        assert time.monotonic() < deadline, table
        time.sleep(0.2)
        table = requests.get(f"{gateway['adminUrl']}/routes", timeout=5).json()["stages"]
    old_ports = {
        int(url.rsplit(":", 1)[1])
        for url in table[old_stage]["models"][model.model_name]["backends"]
    }
    url = f"{gateway['url']}/{endpoint.endpoint_id}/v1/models/{model.model_name}/predict"
    outcomes: list[int] = []
    stop = threading.Event()

    def load() -> None:
        session = requests.Session()
        while not stop.is_set():
            try:
                reply = session.post(
                    url, json={"instances": [VERSICOLOR]}, verify=gateway["ca"], timeout=10
                )
                ok = reply.status_code == 200 and reply.json() == {"predictions": [1]}
                outcomes.append(200 if ok else reply.status_code)
            except requests.RequestException:
                outcomes.append(-1)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        changed = requests.put(
            f"{platform.api_url}/endpoints/{endpoint.endpoint_id}/default-stage",
            json={"endpointStageId": next_stage.endpoint_stage_id},
            headers=platform.auth_headers,
            timeout=10,
        )
        assert changed.status_code == 200, changed.text
        deadline = time.monotonic() + 60
        while old_ports & runtime_ports():  # the old default's pod ends after the grace
            assert time.monotonic() < deadline, "the old default stage's pod never ended"
            time.sleep(0.3)
        served_before = len(outcomes)
        time.sleep(2.0)  # and requests go on, to the new stage's pod only
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    failed = [code for code in outcomes if code != 200]
    assert failed == [] and len(outcomes) > served_before > 20, (len(outcomes), failed[:5])
    view = requests.get(
        f"{platform.api_url}/endpoints/{endpoint.endpoint_id}",
        headers=platform.auth_headers,
        timeout=10,
    ).json()["endpoint"]
    assert view["defaultStage"]["endpointStageId"] == next_stage.endpoint_stage_id
    assert [s["endpointStageId"] for s in view["endpointStageList"]] == [
        next_stage.endpoint_stage_id
    ]
    sdk.Endpoint.delete_by_id(endpoint.endpoint_id)
