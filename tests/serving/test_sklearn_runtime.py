"""The Python runtime serving a scikit-learn iris model over HTTP, bad input included.

One real runtime process for the module, configured through environment variables (as a
pod gets a model's parameters); every test talks to it with ``requests``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.serving.faulty import FAULT_VALUE
from tests.serving.models import iris_model
from tests.serving.runtime import RuntimeProcess

pytestmark = pytest.mark.slow

MAX_BODY_BYTES = 64 * 1024
SETOSA = [5.1, 3.5, 1.4, 0.2]
VERSICOLOR = [6.4, 3.2, 4.5, 1.5]
VIRGINICA = [6.3, 3.3, 6.0, 2.5]


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("iris")
    model_dir = iris_model(root / "model")
    runtime = RuntimeProcess(
        [],
        root / "runtime.log",
        env={
            "MODEL_NAME": "iris",
            "MODEL_DIR": str(model_dir),
            "FRAMEWORK": "sklearn",
            "MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        },
    )
    try:
        yield runtime.wait_ready().url
    finally:
        runtime.stop()


def v2_request(data: list[object], shape: list[int], datatype: str = "FP32") -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]}


def test_v1_instances_get_iris_class_predictions(iris: str) -> None:
    body = {"instances": [SETOSA, VERSICOLOR, VIRGINICA]}
    response = requests.post(f"{iris}/v1/models/iris:predict", json=body, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [0, 1, 2]}


def test_v2_inputs_get_outputs(iris: str) -> None:
    body = v2_request(SETOSA + VIRGINICA, [2, 4])
    response = requests.post(f"{iris}/v2/models/iris/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["shape"] == [2]
    assert output["data"] == [0, 2]


def test_v2_health_and_metadata_describe_the_model(iris: str) -> None:
    assert requests.get(f"{iris}/v2/health/live", timeout=5).status_code == 200
    assert requests.get(f"{iris}/v2/health/ready", timeout=5).json() == {"ready": True}
    assert requests.get(f"{iris}/v2/models/iris/ready", timeout=5).status_code == 200
    metadata = requests.get(f"{iris}/v2/models/iris", timeout=5).json()
    assert metadata["name"] == "iris"
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert requests.get(f"{iris}/v1/models/iris", timeout=5).json()["ready"] is True
    assert requests.get(f"{iris}/v2", timeout=5).json()["name"] == "kserve"


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("v1/models/iris:predict", {"instances": [[1.0, 2.0, 3.0]]}, 400, "expected shape"),
        ("v1/models/iris:predict", {"instances": [[1, 2, 3, 4], [1, 2]]}, 400, "differ"),
        ("v1/models/iris:predict", {"instances": [["a", "b", "c", "d"]]}, 400, "numbers"),
        ("v1/models/iris:predict", {"instances": []}, 400, "empty"),
        ("v1/models/iris:predict", {"rows": [SETOSA]}, 400, "instances"),
        ("v2/models/iris/infer", v2_request(SETOSA[:3], [1, 4]), 400, "shape [1, 4]"),
        ("v2/models/iris/infer", v2_request(SETOSA, [2, 2]), 400, "expected shape"),
        ("v2/models/iris/infer", v2_request(["a", "b", "c", "d"], [1, 4]), 400, "FP32"),
        ("v2/models/iris/infer", v2_request(SETOSA, [1, 4], "FP99"), 400, "FP99"),
        ("v2/models/iris/infer", v2_request(["a"] * 4, [1, 4], "BYTES"), 400, "numbers"),
        ("v2/models/iris/infer", {"inputs": []}, 400, "empty"),
        ("v1/models/lily:predict", {"instances": [SETOSA]}, 404, "lily"),
        ("v2/models/lily/infer", v2_request(SETOSA, [1, 4]), 404, "lily"),
    ],
)
def test_bad_input_gets_a_4xx_naming_the_problem(
    iris: str, path: str, body: dict[str, object], status: int, message: str
) -> None:
    response = requests.post(f"{iris}/{path}", json=body, timeout=10)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


@pytest.mark.parametrize("path", ["v1/models/iris:predict", "v2/models/iris/infer"])
def test_an_empty_body_gets_a_4xx(iris: str, path: str) -> None:
    response = requests.post(
        f"{iris}/{path}", data=b"", headers={"content-type": "application/json"}, timeout=10
    )
    assert 400 <= response.status_code < 500, response.text


def test_malformed_json_and_a_non_json_content_type_are_handled(iris: str) -> None:
    url = f"{iris}/v1/models/iris:predict"
    broken = requests.post(
        url, data=b'{"instances": [', headers={"content-type": "application/json"}, timeout=10
    )
    assert broken.status_code == 400
    assert "Unrecognized request format" in broken.json()["error"]
    # curl -d labels JSON as a form: the body is still read as JSON
    form = requests.post(url, data=b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}', timeout=10)
    assert form.status_code == 200, form.text
    assert form.json() == {"predictions": [0]}


def test_an_oversized_body_gets_413_with_or_without_content_length(iris: str) -> None:
    url = f"{iris}/v1/models/iris:predict"
    big = b'{"instances": [' + b"[1.0, 2.0, 3.0, 4.0], " * 4000 + b"[1, 2, 3, 4]]}"
    assert len(big) > MAX_BODY_BYTES
    declared = requests.post(url, data=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413
    assert "exceeds the limit" in declared.json()["error"]
    chunked = requests.post(
        url,
        data=(big[i : i + 8192] for i in range(0, len(big), 8192)),
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert chunked.status_code == 413
    ok = requests.post(url, json={"instances": [SETOSA]}, timeout=10)
    assert ok.status_code == 200


def test_a_failing_request_gets_500_and_the_server_keeps_serving(iris: str) -> None:
    failing = [FAULT_VALUE, 3.5, 1.4, 0.2]
    for path, body in [
        ("v1/models/iris:predict", {"instances": [failing]}),
        ("v2/models/iris/infer", v2_request(failing, [1, 4], "FP64")),
    ]:
        response = requests.post(f"{iris}/{path}", json=body, timeout=10)
        assert response.status_code == 500
        assert "failed" in response.json()["error"]
    after = requests.post(f"{iris}/v1/models/iris:predict", json={"instances": [VIRGINICA]})
    assert after.status_code == 200
    assert after.json() == {"predictions": [2]}
    assert requests.get(f"{iris}/v2/health/ready", timeout=5).status_code == 200


def test_a_missing_model_file_stops_the_runtime_with_a_reason(tmp_path: Path) -> None:
    runtime = RuntimeProcess(
        ["--model_name", "iris", "--model_dir", str(tmp_path), "--framework", "SKLEARN"],
        tmp_path / "runtime.log",
    )
    try:
        assert runtime.wait_exit() == 2
        assert "no scikit-learn model" in runtime.output()
    finally:
        runtime.stop()
