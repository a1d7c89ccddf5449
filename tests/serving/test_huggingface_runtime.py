"""The Python runtime serving tiny Hugging Face models (one process per task) over HTTP.

The models are randomly initialised and saved as safetensors at test time, so the tests
check the shape and type of every answer, not its meaning. The five runtimes start together
(the module's fixture) to share the machine's cores while they import torch. One more model
comes from a fake hub on loopback, as a pod fetches an ``hf://`` model.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from chalicelib.hfhub import fetch_model
from tests.serving.fake_hub import FakeHub
from tests.serving.fake_hub import fake_hub as fake_hub  # the fixture
from tests.serving.models import NUM_LABELS, VOCAB, huggingface_model
from tests.serving.runtime import RuntimeProcess

pytestmark = pytest.mark.slow

TASKS = [
    "sequence_classification",
    "token_classification",
    "fill_mask",
    "text_generation",
    "text2text_generation",
]
TEXTS = ["the cat sat on the mat", "a dog ran"]


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("huggingface")
    started: dict[str, RuntimeProcess] = {}
    try:
        for task in TASKS:
            model_dir = huggingface_model(task, root / task)
            started[task] = RuntimeProcess(
                ["--model_name", task, "--model_dir", str(model_dir)],
                root / f"{task}.log",
                env={"FRAMEWORK": "HUGGING_FACE", "TASK": task, "MAX_NEW_TOKENS": "4"},
            )
        yield {task: runtime.wait_ready().url for task, runtime in started.items()}
    finally:
        for runtime in started.values():
            runtime.terminate()  # all at once: each takes a few seconds to shut down
        for runtime in started.values():
            runtime.stop()


def predict_v1(url: str, task: str, instances: list[object]) -> requests.Response:
    return requests.post(f"{url}/v1/models/{task}:predict", json={"instances": instances})


def infer_v2(url: str, task: str, texts: list[str]) -> requests.Response:
    tensor = {"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}
    body = {"inputs": [tensor]}
    return requests.post(f"{url}/v2/models/{task}/infer", json=body, timeout=30)


def test_sequence_classification_answers_a_class_per_text(runtimes: dict[str, str]) -> None:
    task = "sequence_classification"
    response = predict_v1(runtimes[task], task, TEXTS)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 2
    assert all(label in range(NUM_LABELS) for label in predictions)
    (output,) = infer_v2(runtimes[task], task, TEXTS).json()["outputs"]
    assert output["shape"] == [2]
    assert output["data"] == predictions


def test_token_classification_answers_a_class_per_token(runtimes: dict[str, str]) -> None:
    task = "token_classification"
    response = predict_v1(runtimes[task], task, TEXTS)
    assert response.status_code == 200, response.text
    first, second = response.json()["predictions"]
    assert len(first) == len(second) == 6  # padded to the longer text's six words
    assert all(label in range(NUM_LABELS) for label in first + second)


def test_fill_mask_answers_a_vocabulary_token(runtimes: dict[str, str]) -> None:
    task = "fill_mask"
    response = predict_v1(runtimes[task], task, ["the cat [MASK] on the mat"])
    assert response.status_code == 200, response.text
    (token,) = response.json()["predictions"]
    assert token in VOCAB
    v2 = infer_v2(runtimes[task], task, ["a [MASK] ran"])
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["datatype"] == "BYTES"


def test_fill_mask_without_a_mask_token_is_a_400(runtimes: dict[str, str]) -> None:
    response = predict_v1(runtimes["fill_mask"], "fill_mask", ["no mask here"])
    assert response.status_code == 400
    assert "[MASK]" in response.json()["error"]


@pytest.mark.parametrize("task", ["text_generation", "text2text_generation"])
def test_generation_answers_text_per_prompt(runtimes: dict[str, str], task: str) -> None:
    response = predict_v1(runtimes[task], task, TEXTS)
    assert response.status_code == 200, response.text
    generated = response.json()["predictions"]
    assert len(generated) == 2
    assert all(isinstance(text, str) for text in generated)
    for text in generated:  # MAX_NEW_TOKENS=4 words of the tiny vocabulary at most
        assert len(text.split()) <= 4
        assert set(text.split()) <= set(VOCAB)
    v2 = infer_v2(runtimes[task], task, TEXTS[:1])
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["shape"] == [1]


@pytest.mark.parametrize("task", ["sequence_classification", "text_generation"])
def test_a_text_longer_than_the_model_is_truncated(runtimes: dict[str, str], task: str) -> None:
    long_text = " ".join(["the cat sat on the mat"] * 30)  # 180 words, 64 positions
    response = predict_v1(runtimes[task], task, [long_text])
    assert response.status_code == 200, response.text


def test_v2_metadata_declares_a_text_input(runtimes: dict[str, str]) -> None:
    url = runtimes["sequence_classification"]
    metadata = requests.get(f"{url}/v2/models/sequence_classification", timeout=5).json()
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": [1, 2]}, "strings"),
        ({"instances": []}, "empty"),
        ({"instances": ["word"] * 65}, "at most 64"),
    ],
)
def test_bad_v1_input_to_a_text_model_is_a_400(
    runtimes: dict[str, str], body: dict[str, object], message: str
) -> None:
    url = runtimes["sequence_classification"]
    response = requests.post(f"{url}/v1/models/sequence_classification:predict", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_a_number_tensor_to_a_text_model_is_a_400(runtimes: dict[str, str]) -> None:
    url = runtimes["sequence_classification"]
    body = {"inputs": [{"name": "text", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}
    response = requests.post(f"{url}/v2/models/sequence_classification/infer", json=body)
    assert response.status_code == 400
    assert "BYTES" in response.json()["error"]


def test_the_openai_routes_are_not_served_without_vllm(runtimes: dict[str, str]) -> None:
    url = runtimes["text_generation"]
    body = {"model": "text_generation", "prompt": "the cat"}
    response = requests.post(f"{url}/openai/v1/completions", json=body, timeout=5)
    assert response.status_code == 404


def test_pickle_weights_are_refused_at_load(tmp_path: Path) -> None:
    import torch

    model_dir = huggingface_model("sequence_classification", tmp_path / "model")
    state = dict.fromkeys(["weight"], torch.zeros(1))
    torch.save(state, model_dir / "pytorch_model.bin")
    (model_dir / "model.safetensors").unlink()
    runtime = RuntimeProcess(
        [
            "--model_name",
            "m",
            "--model_dir",
            str(model_dir),
            "--framework",
            "HUGGING_FACE",
            "--task",
            "sequence_classification",
        ],
        tmp_path / "runtime.log",
    )
    try:
        assert runtime.wait_exit() == 2
        assert "refusing pickle weights pytorch_model.bin" in runtime.output()
    finally:
        runtime.stop()
        shutil.rmtree(model_dir)


def test_a_model_fetched_from_a_hub_is_served(fake_hub: FakeHub, tmp_path: Path) -> None:
    """What a pod does with an ``hf://`` model: fetch_model (PodHost.start's download step)
    takes the safetensors weights, configs and tokenizer from the hub, not the decoys."""
    import torch

    repo = huggingface_model("fill_mask", tmp_path / "repo")
    torch.save({"weight": torch.zeros(1)}, repo / "pytorch_model.bin")
    (repo / "onnx").mkdir()
    (repo / "onnx" / "model.onnx").write_bytes(b"onnx")
    fake_hub.add("org/tiny-bert", repo, token="hf_pod_token_1234567890")
    model_dir = tmp_path / "pod" / "model"

    fetch_model("hf://org/tiny-bert", model_dir, [("hf_token", "hf_pod_token_1234567890")])

    fetched = sorted(p.name for p in model_dir.rglob("*") if p.is_file())
    assert "model.safetensors" in fetched and "config.json" in fetched
    assert "tokenizer.json" in fetched
    assert not {"pytorch_model.bin", "model.onnx"} & set(fetched)
    runtime = RuntimeProcess(
        ["--model_name", "hub", "--model_dir", str(model_dir)],
        tmp_path / "runtime.log",
        env={"FRAMEWORK": "HUGGING_FACE", "TASK": "fill_mask"},
    )
    try:
        response = predict_v1(runtime.wait_ready().url, "hub", ["the cat [MASK] on the mat"])
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0] in VOCAB
    finally:
        runtime.stop()
