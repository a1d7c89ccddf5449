"""Model request and response shapes (the SDK's ``Model`` and ``ModelCreateBody``)."""

from __future__ import annotations

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


ModelParameterList = Annotated[
    list[Parameter],
    Field(max_length=MAX_HYPERPARAMETERS, description="at most 100 parameters"),
    AfterValidator(_unique_parameter_names),
]
FrameworkVersion = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class ModelCreate(WireModel):
    """``POST /models``: an artifact URI, or a COMPLETE training or tuning to take it from
    (exactly one; ``ModelService.create`` checks that, naming the fields)."""

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
