"""vLLM for a HUGGING_FACE text_generation model on a pod with GPUs: ``runtime_command``
picks ``vllm serve`` (its options from the model's parameters) or the Python runtime, refuses
a node without vLLM with a clear reason, and a pod supervises ``vllm serve`` through its
``/health`` route.

The real vLLM needs a GPU and is not installed here: the supervision tests run a stand-in
``vllm`` executable (:data:`STAND_IN`), written by the test and named by
``OPENMAKER_VLLM_BIN``. ``tests/gpu/vllm_check.py`` runs the real one on a GPU machine.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from chalicelib.config import reset_settings
from serving.deploy import (
    VLLM_BIN_VARIABLE,
    DeployError,
    ModelSpec,
    PodHost,
    health_path_for,
    runtime_command,
)

GENERATE = ("task", "text_generation")

# A stand-in for the real vLLM (the real one needs a GPU): ``vllm serve MODEL --host H
# --port P --served-model-name N [--option=value ...]`` answers ``/health`` and a fixed
# OpenAI ``/v1/completions`` for the served name (404 for another, as vLLM does), and
# writes its arguments and a few variables to ``$STAND_IN_RECORD``.
STAND_IN = '''"""A stand-in for the real vLLM in tests: not vLLM, no model is loaded."""
import argparse, json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser(prog="vllm")
parser.add_argument("command", choices=["serve"])
parser.add_argument("model")
parser.add_argument("--host", required=True)
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--served-model-name", required=True)
args, _options = parser.parse_known_args()
seen = {name: os.environ.get(name) for name in ("TASK", "HF_HUB_OFFLINE", "MAX_MODEL_LEN")}
with open(os.environ["STAND_IN_RECORD"], "w") as record:
    json.dump({"argv": sys.argv[1:], "env": seen, "pid": os.getpid()}, record)
print("stand-in vllm serving", args.served_model_name, flush=True)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *_args):
        return

    def reply(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/v1/models":
            self.reply(200, {"object": "list", "data": [{"id": args.served_model_name}]})
        else:
            self.reply(404, {"detail": "Not Found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/v1/completions":
            self.reply(404, {"detail": "Not Found"})
        elif body.get("model") != args.served_model_name:
            message = f"The model `{body.get('model')}` does not exist."
            self.reply(404, {"object": "error", "message": message, "code": 404})
        else:
            choice = {"index": 0, "text": " from the stand-in", "finish_reason": "length"}
            self.reply(200, {
                "id": "cmpl-stand-in", "object": "text_completion", "created": int(time.time()),
                "model": args.served_model_name, "choices": [choice],
                "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
            })


ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()
'''


def spec(
    *parameters: tuple[str, str], gpus: float = 1.0, framework: str = "HUGGING_FACE"
) -> ModelSpec:
    return ModelSpec("gen", framework, "file:///m", gpus=gpus, parameters=list(parameters))


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-in ``vllm`` executable, named by ``OPENMAKER_VLLM_BIN``."""
    path = tmp_path / "bin" / "vllm"
    path.parent.mkdir()
    path.write_text(f"#!{sys.executable}\n{STAND_IN}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(VLLM_BIN_VARIABLE, str(path))
    monkeypatch.setenv("STAND_IN_RECORD", str(tmp_path / "record.json"))
    return path


@pytest.fixture
def no_vllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node without vLLM: no OPENMAKER_VLLM_BIN, nothing called vllm on PATH nor beside
    this Python (moved to an empty folder: a venv with vllm in it stays out of the test)."""
    monkeypatch.delenv(VLLM_BIN_VARIABLE, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "empty" / "python"))


# -- which runtime, with which options --------------------------------------------------------


def test_a_gpu_text_generation_model_is_served_by_vllm_under_its_name(stand_in: Path) -> None:
    argv, env = runtime_command(spec(GENERATE), Path("/pods/gen/model"), 8123)

    assert argv[:3] == [str(stand_in), "serve", "/pods/gen/model"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"  # the gateway runs on another node
    assert argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--served-model-name") + 1] == "gen"
    assert argv[argv.index("--load-format") + 1] == "safetensors"
    assert not any(a.startswith("--tensor-parallel-size") for a in argv)
    assert env["TASK"] == "text_generation" and env["HF_HUB_OFFLINE"] == "1"
    assert health_path_for(spec(GENERATE)) == "/health"


def test_vllm_options_come_from_the_models_parameters_and_its_gpus(stand_in: Path) -> None:
    parameters = [
        GENERATE,
        ("max_model_len", "2048"),
        ("dtype", "bfloat16"),
        ("GPU-MEMORY-UTILIZATION", "0.8"),
        ("max_num_seqs", "16"),
        ("enforce_eager", "true"),
        ("seed", ""),  # empty: not given
        ("unknown_option", "x"),  # a variable only
    ]

    argv, env = runtime_command(spec(*parameters, gpus=4), Path("/m"), 1)

    options = argv[argv.index("safetensors") + 1 :]
    assert options == [
        "--tensor-parallel-size=4",
        "--max-model-len=2048",
        "--dtype=bfloat16",
        "--gpu-memory-utilization=0.8",
        "--max-num-seqs=16",
        "--enforce-eager",
    ]
    assert env["MAX_MODEL_LEN"] == "2048" and env["UNKNOWN_OPTION"] == "x"


def test_a_parameter_value_is_never_read_as_another_vllm_option(stand_in: Path) -> None:
    argv, _ = runtime_command(spec(GENERATE, ("dtype", "--trust-remote-code")), Path("/m"), 1)

    assert "--trust-remote-code" not in argv
    assert "--dtype=--trust-remote-code" in argv  # vLLM refuses that value


@pytest.mark.parametrize(
    "model",
    [
        spec(GENERATE, gpus=0),  # CPU
        spec(("task", "fill_mask")),
        spec(("task", "text2text_generation")),
        spec(),  # no task
        spec(GENERATE, framework="SKLEARN"),
    ],
    ids=["cpu", "fill_mask", "text2text", "no task", "sklearn"],
)
def test_anything_else_is_served_by_the_python_runtime(model: ModelSpec, no_vllm: None) -> None:
    argv, env = runtime_command(model, Path("/m"), 8123)

    assert argv == [sys.executable, "-m", "serving.runtimes.python", "--http_port", "8123"]
    assert env["MODEL_NAME"] == "gen" and env["MODEL_DIR"] == "/m"
    assert health_path_for(model) == "/v2/health/ready"


def test_a_node_without_vllm_refuses_the_pod_with_the_reason(no_vllm: None) -> None:
    with pytest.raises(DeployError) as refused:
        runtime_command(spec(GENERATE), Path("/m"), 1)

    assert str(refused.value) == (
        "vLLM is not installed on this node: a GPU text_generation model needs it; "
        "set OPENMAKER_VLLM_BIN"
    )


def test_an_openmaker_vllm_bin_that_is_no_executable_is_named(
    no_vllm: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VLLM_BIN_VARIABLE, str(tmp_path / "nowhere" / "vllm"))

    with pytest.raises(DeployError, match=r"OPENMAKER_VLLM_BIN=.*nowhere/vllm is not an exec"):
        runtime_command(spec(GENERATE), Path("/m"), 1)


def test_the_deploy_driver_checks_the_framework_without_looking_for_vllm(no_vllm: None) -> None:
    argv, _ = runtime_command(spec(GENERATE), Path("."), 0, locate=False)

    assert argv[:2] == ["vllm", "serve"]  # found on the pod's own node when it starts


# -- a pod supervising the stand-in ------------------------------------------------------------


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def pod(
    stand_in: Path, openmaker_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PodHost]:
    """A pod of a GPU text_generation model (its artifact a folder below tmp_path)."""
    monkeypatch.setenv("OPENMAKER_FILE_ROOTS", str(tmp_path))
    reset_settings()
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    raw: dict[str, Any] = {
        "name": "gen",
        "framework": "HUGGING_FACE",
        "artifactUri": f"file://{artifact}",
        "gpus": 1,
        "parameters": [list(GENERATE), ["max_model_len", "256"]],
    }
    host = PodHost("stage-key", raw, 0)
    yield host
    host.stop()
    reset_settings()


def complete(port: int, model: str = "gen") -> requests.Response:
    body: dict[str, Any] = {"model": model, "prompt": "Hello", "max_tokens": 3}
    return requests.post(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=5)


@pytest.mark.slow
def test_a_pod_runs_vllm_ready_on_health_and_restarts_it_after_a_crash(
    pod: PodHost, tmp_path: Path
) -> None:
    assert pod.start() is None
    supervisor = pod.supervisor
    assert supervisor is not None and supervisor.health_path == "/health"
    wait_for(lambda: pod.status()["ready"])

    reply = complete(supervisor.port)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["text"] == " from the stand-in"
    assert complete(supervisor.port, "other").status_code == 404
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["argv"][:2] == ["serve", str(pod.folder / "model")]
    assert "--max-model-len=256" in record["argv"]
    assert record["env"] == {
        "TASK": "text_generation",
        "HF_HUB_OFFLINE": "1",
        "MAX_MODEL_LEN": "256",
    }

    first = pod.status()["pid"]
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: supervisor.restarts == 1 and pod.status()["ready"])

    assert pod.status()["pid"] not in (None, first)
    assert complete(supervisor.port).status_code == 200


def test_a_pod_on_a_node_without_vllm_fails_with_the_reason(
    no_vllm: None, openmaker_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENMAKER_FILE_ROOTS", str(tmp_path))
    reset_settings()
    (tmp_path / "artifact").mkdir()
    (tmp_path / "artifact" / "config.json").write_text("{}")
    raw = {
        "name": "gen",
        "framework": "HUGGING_FACE",
        "artifactUri": f"file://{tmp_path / 'artifact'}",
        "gpus": 1,
        "parameters": [list(GENERATE)],
    }
    host = PodHost("stage-key", raw, 0)
    try:
        problem = host.start()
    finally:
        host.stop()
        reset_settings()

    assert problem == (
        "pod stage-key.gen.0: DeployError: vLLM is not installed on this node: a GPU "
        "text_generation model needs it; set OPENMAKER_VLLM_BIN"
    )
    assert host.status() == {"ready": False, "problem": problem}
