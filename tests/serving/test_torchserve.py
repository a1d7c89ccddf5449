"""The TorchServe runtime serving a PyTorch iris model over HTTP, bad input and faults included.

One real runtime (and TorchServe, in Java) for most of the module, started from weights +
model.py + handler.py; a second one from a .mar; every test talks HTTP with ``requests``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from serving.runtimes.torchserve import oip
from serving.runtimes.torchserve.errors import InferenceInputError
from tests.serving.runtime import REPO_ROOT
from tests.serving.torchserve_fixtures import (
    CRASH_VALUE,
    FAULT_VALUE,
    SETOSA,
    VERSICOLOR,
    VIRGINICA,
    TorchServeRuntime,
    iris_mar_dir,
    iris_weights_dir,
    processes_mentioning,
)

pytestmark = pytest.mark.slow

MAX_BODY_BYTES = 64 * 1024
ROWS = [SETOSA, VERSICOLOR, VIRGINICA]


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return iris_weights_dir(tmp_path_factory.mktemp("iris-weights") / "model")


@pytest.fixture(scope="module")
def runtime(
    weights_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TorchServeRuntime]:
    """Configured through environment variables, as a pod gets a model's parameters."""
    root = tmp_path_factory.mktemp("iris-runtime")
    process = TorchServeRuntime(weights_dir, root, env={"MAX_BODY_BYTES": str(MAX_BODY_BYTES)})
    try:
        yield process.wait_ready()
    finally:
        process.stop()


@pytest.fixture
def iris(runtime: TorchServeRuntime) -> Iterator[str]:
    """The runtime's URL; after the test it still answers a good request."""
    yield runtime.url
    assert predict(runtime.url, [SETOSA]) == [0], runtime.output()


def predict(url: str, rows: list[list[float]]) -> object:
    response = requests.post(f"{url}/predictions/iris", json=rows, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def v2_request(data: list[object], shape: list[int], datatype: str = "FP32") -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]}


def test_predictions_route_classifies_iris_rows(iris: str) -> None:
    assert predict(iris, ROWS) == [0, 1, 2]


def test_v1_instances_get_predictions(iris: str) -> None:
    for path in ("/v1/models/iris:predict", "/v1/models/iris/predict"):
        response = requests.post(f"{iris}{path}", json={"instances": ROWS}, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": [0, 1, 2]}


def test_v2_inputs_get_outputs_with_flat_or_nested_data(iris: str) -> None:
    flat = [value for row in ROWS for value in row]
    for data in (flat, ROWS):
        body = {"id": "req-1", **v2_request(data, [3, 4])}
        response = requests.post(f"{iris}/v2/models/iris/infer", json=body, timeout=30)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["model_name"] == "iris"
        assert answer["id"] == "req-1"
        assert answer["outputs"] == [
            {"name": "output-0", "shape": [3], "datatype": "INT64", "data": [0, 1, 2]}
        ]


def test_health_and_metadata_routes_answer(iris: str) -> None:
    assert requests.get(f"{iris}/v2/health/live", timeout=5).json() == {"live": True}
    assert requests.get(f"{iris}/v2/health/ready", timeout=5).json() == {"ready": True}
    assert requests.get(f"{iris}/v2/models/iris/ready", timeout=5).status_code == 200
    metadata = requests.get(f"{iris}/v2/models/iris", timeout=5).json()
    assert metadata["name"] == "iris"
    assert metadata["platform"] == "pytorch_torchserve"
    assert requests.get(f"{iris}/v1/models/iris", timeout=5).json() == {
        "name": "iris",
        "ready": True,
    }
    assert requests.get(f"{iris}/v1/models", timeout=5).json() == {"models": ["iris"]}


BAD_REQUESTS = [
    pytest.param(
        "/v2/models/iris/infer",
        v2_request([5.1, 3.5, 1.4], [1, 3]),
        "needs 4 numbers",
        id="v2-three-features",
    ),
    pytest.param(
        "/v2/models/iris/infer",
        v2_request(SETOSA[:3], [1, 4]),
        "shape [1, 4] needs 4 values, data holds 3",
        id="v2-shape-disagrees-with-data",
    ),
    pytest.param(
        "/v2/models/iris/infer",
        v2_request(["a", 3.5, 1.4, 0.2], [1, 4]),
        "'a' is not a FP32 value",
        id="v2-string-in-fp32",
    ),
    pytest.param(
        "/v2/models/iris/infer",
        v2_request(SETOSA, [1, 4], datatype="FLOAT99"),
        "datatype 'FLOAT99' is not one of",
        id="v2-unknown-datatype",
    ),
    pytest.param(
        "/v2/models/iris/infer", {"instances": ROWS}, '"inputs" list', id="v2-without-inputs"
    ),
    pytest.param("/v2/models/iris/infer", {"inputs": []}, "non-empty", id="v2-no-inputs"),
    pytest.param(
        "/v1/models/iris:predict",
        {"instances": [[5.1, 3.5]]},
        "needs 4 numbers",
        id="v1-two-features",
    ),
    pytest.param(
        "/v1/models/iris:predict",
        {"instances": [["a", "b", "c", "d"]]},
        "rows must be numbers",
        id="v1-strings",
    ),
    pytest.param(
        "/v1/models/iris:predict", {"rows": ROWS}, '"instances" list', id="v1-without-instances"
    ),
    pytest.param("/predictions/iris", [[1.0, 2.0]], "needs 4 numbers", id="raw-two-features"),
]


@pytest.mark.parametrize(("path", "body", "message"), BAD_REQUESTS)
def test_bad_input_is_a_400_naming_the_fault(
    iris: str, path: str, body: object, message: str
) -> None:
    response = requests.post(f"{iris}{path}", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    "path", ["/v2/models/iris/infer", "/v1/models/iris:predict", "/predictions/iris"]
)
def test_empty_or_non_json_body_is_a_400(iris: str, path: str) -> None:
    headers = {"Content-Type": "application/json"}
    empty = requests.post(f"{iris}{path}", data=b"", headers=headers, timeout=30)
    assert empty.status_code == 400, empty.text
    assert "empty request body" in empty.json()["error"]
    if path != "/predictions/iris":  # TorchServe's own route passes any bytes to the handler
        garbled = requests.post(f"{iris}{path}", data=b"{not json", headers=headers, timeout=30)
        assert garbled.status_code == 400, garbled.text
        assert "not JSON" in garbled.json()["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/models/rose/infer"),
        ("POST", "/v1/models/rose:predict"),
        ("POST", "/predictions/rose"),
        ("GET", "/v2/models/rose"),
        ("GET", "/v2/models/rose/ready"),
    ],
)
def test_an_unknown_model_name_is_a_404(iris: str, method: str, path: str) -> None:
    response = requests.request(method, f"{iris}{path}", json={"instances": ROWS}, timeout=30)
    assert response.status_code == 404, response.text
    assert "'rose' is not served here" in response.json()["error"]


def test_an_oversized_body_is_a_413(iris: str) -> None:
    rows = [SETOSA] * (MAX_BODY_BYTES // 10)
    response = requests.post(
        f"{iris}/v1/models/iris:predict", json={"instances": rows}, timeout=30
    )
    assert response.status_code == 413, response.text
    assert "over" in response.json()["error"]


def test_a_handler_exception_fails_that_request_only(iris: str) -> None:
    response = requests.post(
        f"{iris}/v1/models/iris:predict", json={"instances": [[FAULT_VALUE, 1, 1, 1]]}, timeout=30
    )
    assert response.status_code == 500, response.text
    assert "handler failed" in response.json()["error"]
    assert predict(iris, ROWS) == [0, 1, 2]


def test_a_crashed_worker_fails_that_request_and_is_replaced(iris: str) -> None:
    response = requests.post(f"{iris}/predictions/iris", json=[[CRASH_VALUE, 1, 1, 1]], timeout=60)
    assert 500 <= response.status_code < 600, response.text
    assert "error" in response.json()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = requests.post(f"{iris}/predictions/iris", json=ROWS, timeout=30)
        if answer.status_code == 200:
            break
        time.sleep(0.5)
    assert answer.json() == [0, 1, 2]


def test_torchserve_listens_on_loopback_only_and_only_on_the_model_store(
    runtime: TorchServeRuntime,
) -> None:
    config = runtime.torchserve_config()
    for key in ("inference_address", "management_address", "metrics_address"):
        assert config[key].startswith("http://127.0.0.1:"), config[key]
    for key in ("grpc_inference_address", "grpc_management_address"):
        assert config[key] == "127.0.0.1"
    assert config["allowed_urls"] == f"file://{config['model_store']}/.*"
    assert config["disable_token_authorization"] == "false"


def test_the_management_api_refuses_calls_without_its_token(runtime: TorchServeRuntime) -> None:
    management = runtime.torchserve_config()["management_address"]
    for headers in ({}, {"Authorization": "Bearer not-the-key"}):
        response = requests.get(f"{management}/models", headers=headers, timeout=5)
        assert response.status_code == 400, response.text
        assert response.json()["type"] == "InvalidKeyException"
        register = requests.post(
            f"{management}/models", params={"url": "iris"}, headers=headers, timeout=5
        )
        assert register.json()["type"] == "InvalidKeyException"


def test_torchserve_itself_refuses_inference_without_the_key(runtime: TorchServeRuntime) -> None:
    inference = runtime.torchserve_config()["inference_address"]
    response = requests.post(f"{inference}/predictions/iris", json=ROWS, timeout=5)
    assert response.json()["type"] == "InvalidKeyException"


def test_a_model_url_outside_the_store_is_refused_even_with_the_key(
    runtime: TorchServeRuntime,
) -> None:
    management = runtime.torchserve_config()["management_address"]
    key = json.loads((runtime.work_dir / "key_file.json").read_text())["management"]["key"]
    response = requests.post(
        f"{management}/models",
        params={"url": "file:///etc/passwd", "model_name": "other"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert response.status_code == 404, response.text
    assert "does not match any allowed URL" in response.json()["message"]


def test_a_mar_is_served_and_sigterm_stops_torchserve_cleanly(
    weights_dir: Path, tmp_path: Path
) -> None:
    model_dir = iris_mar_dir(weights_dir, tmp_path / "mar")
    assert [path.name for path in model_dir.iterdir()] == ["iris.mar"]
    process = TorchServeRuntime(model_dir, tmp_path)
    try:
        process.wait_ready()
        response = requests.post(
            f"{process.url}/v1/models/iris:predict", json={"instances": ROWS}, timeout=30
        )
        assert response.json() == {"predictions": [0, 1, 2]}
        assert processes_mentioning(str(process.work_dir)), "TorchServe should be running"
        process.popen.send_signal(signal.SIGTERM)
        assert process.popen.wait(timeout=30) == 0, process.output()
        assert processes_mentioning(str(process.work_dir)) == []
    finally:
        process.stop()


def test_extra_files_and_requirements_are_archived_and_torchserve_dying_exits_1(
    weights_dir: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(weights_dir, model_dir)
    (model_dir / "extra").mkdir()
    names = ["setosa", "versicolor", "virginica"]
    (model_dir / "extra" / "labels.json").write_text(json.dumps(names))
    (model_dir / "requirements.txt").write_text("# nothing beyond the runtime's own\n")
    process = TorchServeRuntime(model_dir, tmp_path)
    try:
        process.wait_ready()
        assert predict(process.url, ROWS) == names
        archived = process.work_dir / "model-store" / "iris"
        assert {"labels.json", "requirements.txt", "handler.py"} <= {
            path.name for path in archived.iterdir()
        }
        java = [line for line in processes_mentioning(str(process.work_dir)) if "java" in line]
        assert len(java) == 1, java
        os.kill(int(java[0].split()[0]), signal.SIGKILL)
        assert process.popen.wait(timeout=30) == 1, process.output()
        assert "TorchServe exited" in process.output()
        assert processes_mentioning(str(process.work_dir)) == []
    finally:
        process.stop()


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        pytest.param([], "needs a .mar, or exactly one weights file", id="empty"),
        pytest.param(["iris.pt", "model.py"], "lacks handler.py", id="no-handler"),
        pytest.param(["a.pt", "b.pth"], "weights found: a.pt, b.pth", id="two-weights"),
    ],
)
def test_a_model_dir_without_a_model_exits_2_with_the_reason(
    tmp_path: Path, files: list[str], reason: str
) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in files:
        (model_dir / name).write_bytes(b"")
    process = TorchServeRuntime(model_dir, tmp_path)
    try:
        assert process.popen.wait(timeout=30) == 2
        assert reason in process.output()
    finally:
        process.stop()


# The OIP translation on its own (no process): what the handler gets and what clients get back.


def test_several_v2_inputs_reach_the_handler_by_name_and_outputs_come_back_by_name() -> None:
    body = {
        "inputs": [
            {"name": "a", "shape": [2, 2], "datatype": "INT32", "data": [1, 2, 3, 4]},
            {"name": "b", "shape": [1], "datatype": "BYTES", "data": ["x"]},
        ]
    }
    assert oip.v2_handler_body(body) == ({"a": [[1, 2], [3, 4]], "b": ["x"]}, None)
    answer = oip.v2_response({"p": [[0.5, 0.25]], "ok": [True], "s": ["y"]}, "m", "1", "r")
    assert answer["id"] == "r"
    assert answer["outputs"] == [
        {"name": "p", "shape": [1, 2], "datatype": "FP64", "data": [0.5, 0.25]},
        {"name": "ok", "shape": [1], "datatype": "BOOL", "data": [True]},
        {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["y"]},
    ]


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"shape": [1], "datatype": "INT32", "data": [1.5]}, "1.5 is not a INT32 value"),
        ({"shape": [1], "datatype": "UINT8", "data": [-1]}, "-1 is not a UINT8 value"),
        ({"shape": [1], "datatype": "BOOL", "data": [1]}, "1 is not a BOOL value"),
        ({"shape": [1], "datatype": "BYTES", "data": [1]}, "1 is not a BYTES value"),
        ({"shape": [-1], "datatype": "FP32", "data": [1.0]}, "non-negative ints"),
        ({"shape": [1], "datatype": "FP32", "data": 1.0}, "data must be a list"),
        ({"shape": [1], "datatype": "FP32", "data": [{"v": 1}]}, "data holds an object"),
    ],
)
def test_a_v2_tensor_that_contradicts_its_datatype_or_shape_is_refused(
    tensor: dict[str, object], message: str
) -> None:
    with pytest.raises(InferenceInputError, match=re.escape(message)):
        oip.v2_handler_body({"inputs": [{"name": "x", **tensor}]})


def test_a_ragged_handler_answer_is_not_a_v2_tensor() -> None:
    with pytest.raises(ValueError):
        oip.v2_response([[1, 2], [3]], "m", "1", None)


def test_options_fall_back_to_screaming_snake_case_variables(tmp_path: Path) -> None:
    env = {**os.environ, "MODEL_NAME": "iris", "MODEL_DIR": str(tmp_path / "absent")}
    done = subprocess.run(
        [sys.executable, "-m", "serving.runtimes.torchserve"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"model directory {tmp_path / 'absent'} does not exist" in done.stderr


def test_a_model_name_that_is_no_path_segment_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving.runtimes.torchserve",
            "--model-name",
            "../iris",
            "--model-dir",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--model-name: letters, digits" in done.stderr
