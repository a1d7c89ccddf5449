"""Model request and response shapes (the SDK's ``Model`` and ``ModelCreateBody``)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from chalicelib.domain.common import (
    MAX_HYPERPARAMETERS,
    Description,
    ListQuery,
    Parameter,
    ResourceName,
    StorageUri,
    Tag,
    UniqueTagList,
    WireDatetime,
    WireModel,
)


class ModelFormat(StrEnum):
    """The frameworks a model can be served with here (the SDK's ``ModelFormatCode`` also
    names TRITON and SAPEON, which this platform does not serve)."""

    TENSORFLOW = "TENSORFLOW"
    PYTORCH = "PYTORCH"
    SKLEARN = "SKLEARN"
    HUGGING_FACE = "HUGGING_FACE"


def _unique_parameter_names(items: list[Parameter]) -> list[Parameter]:
    """Names must stay distinct once they become SCREAMING_SNAKE_CASE variables."""
    names = [screaming_snake(item.parameter_name) for item in items]
    if len(names) != len(set(names)):
        raise ValueError(
            "parameter names must be unique as environment variables "
            "(case-insensitive, '-' same as '_')"
        )
    return items


def screaming_snake(name: str) -> str:
    """A parameter's environment variable name: ``max-length`` -> ``MAX_LENGTH``."""
    return "".join(c if c.isalnum() else "_" for c in name).upper()


SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "API_KEY", "APIKEY")


def is_secret_parameter(name: str) -> bool:
    """A parameter whose value is a credential (a gated Hugging Face model's ``hf_token``,
    any ``*token*``, ``*secret*``, ``*password*``, ``*api_key*``): stored encrypted, shown
    masked, never returned."""
    upper = screaming_snake(name)
    return any(word in upper for word in SECRET_WORDS)


def find_parameter(parameters: Iterable[tuple[str, str]], names: Iterable[str]) -> str | None:
    """The value of the first parameter whose SCREAMING_SNAKE_CASE name is one of ``names``
    (``model-id``, ``model_id`` and ``MODEL_ID`` are one name), or None."""
    wanted = set(names)
    return next((value for name, value in parameters if screaming_snake(name) in wanted), None)


# -- which runtime serves a model, as the gateway must know it -----------------------------
# A HUGGING_FACE text_generation model on pods with GPUs is served by vLLM (``vllm serve``:
# OpenAI routes at /v1, ready at /health); every other model by a runtime that speaks OIP
# (ready at /v2/health/ready, OpenAI routes, where it has them, at /openai/v1).

OIP_HEALTH_PATH = "/v2/health/ready"
VLLM_HEALTH_PATH = "/health"
VLLM_TASK = "text_generation"


def served_by_vllm(framework: str, parameters: Iterable[tuple[str, str]], gpus: float) -> bool:
    task = find_parameter(parameters, ("TASK",))
    return framework == "HUGGING_FACE" and task == VLLM_TASK and gpus > 0


def serving_paths(vllm: bool) -> dict[str, str]:
    """The routes the gateway uses on a pod: its health check and its OpenAI root."""
    if vllm:
        return {"healthPath": VLLM_HEALTH_PATH, "openaiRoot": "/v1"}
    return {"healthPath": OIP_HEALTH_PATH, "openaiRoot": "/openai/v1"}


# -- Hugging Face models made from a hub model id -----------------------------------------
# A HUGGING_FACE model created with a ``model_id`` parameter and no other source points at
# ``hf://{model id}[@{revision}]``: the tick checks the repo on the hub, a pod downloads its
# safetensors weights (chalicelib/hfhub.py). Pure string rules here, no network.

HUB_SCHEME = "hf://"
HUB_MODEL_ID_PARAMETERS = ("MODEL_ID", "HF_MODEL_ID")
HUB_REVISION_PARAMETERS = ("REVISION", "HF_REVISION")
HUB_TOKEN_PARAMETER = "HF_TOKEN"
TASK_PARAMETER = "TASK"
# The Python runtime's tasks (serving/runtimes/python/config.py ``Task``; a unit test keeps
# the two equal: the control plane does not import the runtime).
HUGGING_FACE_TASKS = (
    "sequence_classification",
    "token_classification",
    "fill_mask",
    "text_generation",
    "text2text_generation",
)
HUB_ID_PART_MAX = 96
HUB_REVISION_MAX = 255
_HUB_ID_PART = re.compile(r"[A-Za-z0-9._-]+")
_HUB_REVISION = re.compile(r"[A-Za-z0-9._/-]+")


def hub_model_id_problem(model_id: str) -> str | None:
    """Why ``model_id`` is not a hub model id (``org/name`` or ``name``), or None."""
    rule = (
        "a Hugging Face model id is org/name or name: letters, digits, '.', '_' and '-', "
        f"no '..' or '--', at most {HUB_ID_PART_MAX} characters per part, not starting or "
        "ending with '.' or '-'"
    )
    parts = model_id.split("/")
    if len(parts) > 2 or not all(_hub_id_part_ok(part) for part in parts):
        return rule
    return None


def _hub_id_part_ok(part: str) -> bool:
    return (
        0 < len(part) <= HUB_ID_PART_MAX
        and _HUB_ID_PART.fullmatch(part) is not None
        and ".." not in part
        and "--" not in part
        and part[0] not in ".-"
        and part[-1] not in ".-"
    )


def hub_revision_problem(revision: str) -> str | None:
    """Why ``revision`` is not a branch, tag or commit name of a hub repo, or None."""
    if (
        0 < len(revision) <= HUB_REVISION_MAX
        and _HUB_REVISION.fullmatch(revision) is not None
        and ".." not in revision
        and revision[0] not in "/-."
    ):
        return None
    return (
        "a revision is a branch, tag or commit: letters, digits, '.', '_', '-' and '/', "
        f"no '..', at most {HUB_REVISION_MAX} characters"
    )


def hub_uri(model_id: str, revision: str | None = None) -> str:
    """``hf://org/name`` or ``hf://org/name@revision``.

    Raises:
        ValueError: ``model_id`` or ``revision`` breaks its rule.
    """
    problem = hub_model_id_problem(model_id) or (
        hub_revision_problem(revision) if revision is not None else None
    )
    if problem:
        raise ValueError(problem)
    return f"{HUB_SCHEME}{model_id}" + (f"@{revision}" if revision is not None else "")


def is_hub_uri(uri: str) -> bool:
    return uri.startswith(HUB_SCHEME)


def parse_hub_uri(uri: str) -> tuple[str, str | None]:
    """The model id and revision (None: the default branch) of an ``hf://`` URI.

    Raises:
        ValueError: not an ``hf://`` URI, or its id or revision breaks its rule.
    """
    if not is_hub_uri(uri):
        raise ValueError(f"not a Hugging Face hub URI (they start with {HUB_SCHEME})")
    model_id, at, revision = uri.removeprefix(HUB_SCHEME).partition("@")
    hub_uri(model_id, revision if at else None)  # the same rules as at create
    return model_id, (revision if at else None)


def hub_token(parameters: Iterable[tuple[str, str]]) -> str | None:
    """The hub token among a model's (decrypted) parameters: ``hf_token``, else the first
    credential parameter whose name holds TOKEN; None when there is none or it is empty."""
    listed = list(parameters)
    token = find_parameter(listed, (HUB_TOKEN_PARAMETER,))
    if token is None:
        token = next(
            (
                value
                for name, value in listed
                if is_secret_parameter(name) and "TOKEN" in screaming_snake(name)
            ),
            None,
        )
    return token or None


ModelParameterList = Annotated[
    list[Parameter],
    Field(max_length=MAX_HYPERPARAMETERS, description="at most 100 parameters"),
    AfterValidator(_unique_parameter_names),
]
FrameworkVersion = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class ModelCreate(WireModel):
    """``POST /models``: an artifact URI, or a COMPLETE training or tuning to take it from,
    or (HUGGING_FACE) a hub ``model_id`` parameter (exactly one; ``ModelService.create``
    checks that, naming the fields)."""

    model_name: ResourceName
    description: Description | None = None
    model_format_code: ModelFormat | None = None
    framework_version: FrameworkVersion | None = None
    model_upload_uri: StorageUri | None = None
    training_id: Annotated[str, StringConstraints(min_length=1, max_length=36)] | None = None
    hyperparameter_tuning_id: (
        Annotated[str, StringConstraints(min_length=1, max_length=36)] | None
    ) = None
    fine_tuning_id: str | None = None
    parameter_list: ModelParameterList | None = None
    tag_list: UniqueTagList = []
    parent_pipeline_run_id: Annotated[str, Field(max_length=36)] | None = None


class ModelUpdate(WireModel):
    """``PUT /models/{modelId}``: what the console lets a user change."""

    model_name: ResourceName | None = None
    description: Description | None = None
    tag_list: UniqueTagList | None = None


class ModelQuery(ListQuery):
    model_id_list: list[str] = []
    model_name_list: list[str] = []
    model_status_code_list: list[str] = []
    model_format_code_list: list[str] = []


class TrainingRef(WireModel):
    training_id: str
    training_name: str | None = None


class TuningRef(WireModel):
    hyperparameter_tuning_id: str
    hyperparameter_tuning_name: str | None = None


class Model(WireModel):
    """The wire shape of a model (what the SDK's ``Model`` reads)."""

    model_id: str
    model_name: str
    description: str | None
    model_status_code: str
    status_reason: str | None = None
    model_format_code: str
    framework_version: str | None = None
    model_upload_uri: str
    training: TrainingRef | None = None
    hyperparameter_tuning: TuningRef | None = None
    trial_number: int | None = None
    parameter_list: list[Parameter]
    tag_list: list[Tag]
    app_key: str
    created_datetime: WireDatetime
    updated_datetime: WireDatetime
