"""The runtime's options: arguments over SCREAMING_SNAKE_CASE environment variables.

In-process and cheap; also a static check that the serving code never unpickles with
``torch.load`` unless ``weights_only=True``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from serving.runtimes.python.config import Framework, Task, parse_config

SERVING = Path(__file__).resolve().parents[2] / "serving"


def test_every_option_can_come_from_the_environment() -> None:
    config = parse_config(
        [],
        env={
            "MODEL_NAME": "iris",
            "MODEL_DIR": "/models/iris",
            "FRAMEWORK": "sklearn",
            "MAX_BODY_BYTES": "1024",
            "MAX_NEW_TOKENS": "7",
        },
    )
    assert config.model_name == "iris"
    assert config.model_dir == Path("/models/iris")
    assert config.framework is Framework.SKLEARN
    assert (config.max_body_bytes, config.max_new_tokens) == (1024, 7)
    assert config.enable_grpc is False


def test_arguments_win_over_the_environment() -> None:
    config = parse_config(
        ["--model_name", "b", "--framework", "HUGGING_FACE", "--task", "text-generation"],
        env={"MODEL_NAME": "a", "MODEL_DIR": "/m", "FRAMEWORK": "SKLEARN"},
    )
    assert config.model_name == "b"
    assert config.framework is Framework.HUGGING_FACE
    assert config.task is Task.TEXT_GENERATION


@pytest.mark.parametrize(
    "env",
    [
        {"MODEL_DIR": "/m"},  # no framework
        {"FRAMEWORK": "SKLEARN"},  # no model directory
        {"MODEL_DIR": "/m", "FRAMEWORK": "HUGGING_FACE"},  # no task
        {"MODEL_DIR": "/m", "FRAMEWORK": "PYTORCH"},  # TorchServe's, not ours
        {"MODEL_DIR": "/m", "FRAMEWORK": "HUGGING_FACE", "TASK": "image_classification"},
        {"MODEL_DIR": "/m", "FRAMEWORK": "SKLEARN", "MAX_BODY_BYTES": "lots"},
    ],
)
def test_missing_or_unknown_options_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_config([], env=env)
    assert exit_info.value.code == 2


def _unsafe_torch_loads(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "load"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "torch"
        ):
            safe = any(
                k.arg == "weights_only"
                and isinstance(k.value, ast.Constant)
                and k.value.value is True
                for k in node.keywords
            )
            if not safe:
                lines.append(node.lineno)
    return lines


def test_serving_code_calls_torch_load_only_with_weights_only() -> None:
    unsafe = {
        str(path): lines for path in SERVING.rglob("*.py") if (lines := _unsafe_torch_loads(path))
    }
    assert unsafe == {}
