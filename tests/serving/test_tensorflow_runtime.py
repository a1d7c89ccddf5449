"""The Python runtime serving a TensorFlow SavedModel (TensorFlow CPU in the same process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.serving.models import savedmodel
from tests.serving.runtime import RuntimeProcess

pytestmark = pytest.mark.slow

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def linear(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("tensorflow")
    model_dir = savedmodel(root / "model")
    runtime = RuntimeProcess(
        ["--model_name", "linear", "--model_dir", str(model_dir), "--framework", "TENSORFLOW"],
        root / "runtime.log",
    )
    try:
        yield runtime.wait_ready().url
    finally:
        runtime.stop()


def test_v1_instances_run_the_serving_signature(linear: str) -> None:
    body = {"instances": [[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 1.0]]}
    response = requests.post(f"{linear}/v1/models/linear:predict", json=body, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [[10.0, 10.0, 10.0], [1.0, 1.0, 1.0]]}


def test_v2_infer_and_metadata_follow_the_signature(linear: str) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}
    response = requests.post(f"{linear}/v2/models/linear/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert (output["shape"], output["datatype"], output["data"]) == ([1, 3], "FP32", [4.0] * 3)
    metadata = requests.get(f"{linear}/v2/models/linear", timeout=5).json()
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert metadata["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": [[1.0, 2.0, 3.0]]}, "expected shape [None, 4]"),
        ({"instances": [["a", "b", "c", "d"]]}, "numbers"),
        ({"instances": []}, "empty"),
    ],
)
def test_input_that_does_not_fit_the_signature_is_a_400(
    linear: str, body: dict[str, object], message: str
) -> None:
    response = requests.post(f"{linear}/v1/models/linear:predict", json=body, timeout=10)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_a_directory_without_a_savedmodel_stops_the_runtime(tmp_path: Path) -> None:
    runtime = RuntimeProcess(
        ["--model_name", "m", "--model_dir", str(tmp_path), "--framework", "TENSORFLOW"],
        tmp_path / "runtime.log",
    )
    try:
        assert runtime.wait_exit() == 2
        assert "no TensorFlow SavedModel" in runtime.output()
    finally:
        runtime.stop()
