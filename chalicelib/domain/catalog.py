"""Flavors (instance types), images and built-in algorithms: the catalogs users pick from."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from chalicelib.domain.common import ListQuery, WireModel


class GroupType(StrEnum):
    """What a flavor or image is offered for (the SDK's ``groupType``)."""

    NOTEBOOK = "NOTEBOOK"
    TRAINING = "TRAINING"
    HYPERPARAMETER_TUNING = "HYPERPARAMETER_TUNING"
    ENDPOINT = "ENDPOINT"
    BATCH_INFERENCE = "BATCH_INFERENCE"
    PIPELINE = "PIPELINE"
    PIPELINE_RUN = "PIPELINE_RUN"
    PIPELINE_RECURRING_RUN = "PIPELINE_RECURRING_RUN"
    MODEL_EVALUATION = "MODEL_EVALUATION"
    FINE_TUNING = "FINE_TUNING"


class CoreType(StrEnum):
    CPU = "CPU"
    GPU = "GPU"


class Flavor(WireModel):
    id: str
    name: str
    vcpus: Annotated[int, Field(ge=1)]
    ram: Annotated[int, Field(ge=1, description="MiB")]
    disk: Annotated[int, Field(ge=0, description="GB of boot disk")]
    gpu_flavor: bool = False
    gpu_count: Annotated[int, Field(ge=0)] = 0
    gpu_memory: Annotated[int, Field(ge=0, description="GiB per GPU")] = 0
    gpu_type_code: str | None = None
    core_type_code: CoreType
    group_type_list: list[GroupType]
    description: str = ""


class HyperparameterType(StrEnum):
    INT = "int"
    DOUBLE = "double"
    DISCRETE = "discrete"
    CATEGORICAL = "categorical"


class HyperparameterSpec(WireModel):
    hyperparameter_name: str
    hyperparameter_type_code: HyperparameterType
    hyperparameter_min_value: str | None = None
    hyperparameter_max_value: str | None = None
    hyperparameter_step: str | None = None
    hyperparameter_specified_values: str | None = None
    is_optional: bool = False
    default_value: str | None = None
    description: str = ""


class AlgorithmMetric(WireModel):
    metric_name: str
    description: str = ""


class DatasetSchema(WireModel):
    dataset_name: str
    required: bool = True
    description: str = ""


class Algorithm(WireModel):
    algorithm_id: str
    algorithm_name: str
    description: str = ""
    framework_code: str
    cpu_training_image_id: str | None = None
    gpu_training_image_id: str | None = None
    entry_module: str
    algorithm_dataset_schema: list[DatasetSchema] = []
    hyperparameter_spec_list: list[HyperparameterSpec] = []
    algorithm_metric_list: list[AlgorithmMetric] = []


class Image(WireModel):
    image_id: str
    image_name: str
    image_type_code: GroupType
    core_type_code: CoreType
    framework_code: str
    framework_version: str
    python_version: str
    image_address: str
    image_source_code: str = "EASYMAKER"
    description: str = ""


class FlavorQuery(ListQuery):
    group_type: GroupType | None = None
    algorithm_id: str | None = None
    model_id_list: list[str] = []
    core_type_code: CoreType | None = None


class ImageQuery(ListQuery):
    group_type_code_list: list[GroupType] = []
    core_type_code: CoreType | None = None


class AlgorithmQuery(ListQuery):
    algorithm_name: str | None = None
