"""The training specification shared by trainings, training templates and tunings."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints

from chalicelib.domain.catalog import Algorithm, Flavor, Image
from chalicelib.domain.common import (
    MAX_DATASETS,
    MAX_HYPERPARAMETERS,
    Description,
    ListQuery,
    Parameter,
    ResourceName,
    StorageSizeGb,
    StorageUri,
    Tag,
    UniqueTagList,
    WireDatetime,
    WireModel,
)

MAX_TIMEOUT_MINUTES = 43200  # 720 hours, the SDK's default
MAX_INSTANCE_COUNT = 10
MAX_NPROC_PER_NODE = 64


def _relative_path(value: str) -> str:
    if value.startswith("/") or ".." in value.split("/"):
        raise ValueError("must be a path relative to sourceDirUri without '..'")
    return value


EntryPoint = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255, pattern=r"^[\w./-]+$"),
    AfterValidator(_relative_path),
    Field(description="file name relative to sourceDirUri (no leading '/', no '..')"),
]


class Dataset(WireModel):
    dataset_name: Annotated[
        str, StringConstraints(min_length=1, max_length=36, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    ]
    data_uri: StorageUri


def _unique_names(items: list[Parameter]) -> list[Parameter]:
    names = [item.parameter_name for item in items]
    if len(names) != len(set(names)):
        raise ValueError("hyperparameter names must be unique")
    return items


def _unique_datasets(items: list[Dataset]) -> list[Dataset]:
    names = [item.dataset_name.upper().replace("-", "_") for item in items]
    if len(names) != len(set(names)):
        raise ValueError("dataset names must be unique (case-insensitive, '-' same as '_')")
    return items


HyperparameterList = Annotated[
    list[Parameter],
    Field(max_length=MAX_HYPERPARAMETERS, description="at most 100 hyperparameters"),
    AfterValidator(_unique_names),
]
DatasetList = Annotated[
    list[Dataset],
    Field(max_length=MAX_DATASETS, description="at most 10 datasets"),
    AfterValidator(_unique_datasets),
]


class TrainingSpec(WireModel):
    """What a training runs: code or built-in algorithm, image, flavor, data and outputs.

    Rules between fields (algorithm or own code, torchrun) and against the catalog live in
    ``chalicelib.services.training_spec.validate_training_spec`` so each error names its field.
    """

    image_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    flavor_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    instance_count: Annotated[int, Field(ge=1, le=MAX_INSTANCE_COUNT)] = 1
    nproc_per_node: Annotated[int, Field(ge=1, le=MAX_NPROC_PER_NODE)] = 1
    use_torchrun: bool = False
    data_storage_size: StorageSizeGb | None = None
    algorithm_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    source_dir_uri: StorageUri | None = None
    entry_point: EntryPoint | None = None
    hyperparameter_list: HyperparameterList = []
    dataset_list: DatasetList = []
    check_point_input_uri: StorageUri | None = None
    check_point_upload_uri: StorageUri | None = None
    model_upload_uri: StorageUri
    timeout_minutes: Annotated[int, Field(ge=1, le=MAX_TIMEOUT_MINUTES)] = MAX_TIMEOUT_MINUTES
    use_log: bool = False
    # OpenMaker's own: where the job's log is copied as text when it ends (IBM-style results)
    log_upload_uri: StorageUri | None = None


class TrainingTemplateCreate(TrainingSpec):
    training_template_name: ResourceName
    description: Description | None = None
    tag_list: UniqueTagList = []


class TrainingTemplateCopy(WireModel):
    training_template_name: ResourceName | None = None


class TrainingTemplateQuery(ListQuery):
    training_template_id_list: list[str] = []
    training_template_name_list: list[str] = []


class TrainingTemplate(TrainingSpec):
    training_template_id: str
    training_template_name: str
    description: str | None
    tag_list: list[Tag]
    app_key: str
    created_datetime: WireDatetime
    updated_datetime: WireDatetime


class TrainingCreate(TrainingSpec):
    """``POST /trainings`` (the SDK's ``TrainingCreateBody``)."""

    training_name: ResourceName
    description: Description | None = None
    experiment_id: Annotated[str, StringConstraints(min_length=1, max_length=36)] | None = None
    experiment_name: ResourceName | None = None
    experiment_description: Description | None = None
    training_type_code: Literal["NORMAL"] = "NORMAL"
    tag_list: UniqueTagList = []
    parent_pipeline_run_id: Annotated[str, Field(max_length=36)] | None = None
    parent_pipeline_run_task_name: Annotated[str, Field(max_length=255)] | None = None


class TrainingCopy(WireModel):
    training_name: ResourceName | None = None


class TrainingQuery(ListQuery):
    training_id_list: list[str] = []
    training_name_list: list[str] = []
    training_status_code_list: list[str] = []
    experiment_id: str | None = None
    experiment_id_list: list[str] = []


class ExperimentRef(WireModel):
    experiment_id: str
    experiment_name: str | None = None


class StorageRef(WireModel):
    storage_size: int | None = None


class Training(TrainingSpec):
    """The wire shape of a training (what the SDK's ``Training`` reads)."""

    training_id: str
    training_name: str
    description: str | None
    training_status_code: str
    status_reason: str | None = None
    training_type_code: str = "NORMAL"
    experiment: ExperimentRef
    experiment_id: str
    flavor: Flavor
    image: Image
    algorithm: Algorithm | None = None
    boot_storage: StorageRef
    data_storage_list: list[StorageRef]
    tensorboard_access_uri: str | None = None
    tensorboard_access_path: str | None = None
    log_and_crash_app_key: str | None = None
    elapsed_time_seconds: int | None = None
    zombie: bool = False  # NSML: holds GPUs that stayed at 0 % for an hour
    zombie_since: WireDatetime | None = None
    started_datetime: WireDatetime | None = None
    ended_datetime: WireDatetime | None = None
    tag_list: list[Tag]
    app_key: str
    created_datetime: WireDatetime
    updated_datetime: WireDatetime


class TrainingLogQuery(WireModel):
    """``GET /trainings/{id}/logs``: a page of lines, or lines after a cursor (``follow``)."""

    cursor: Annotated[str, StringConstraints(max_length=4096)] | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 1000
    page: Annotated[int, Field(ge=1, le=100_000)] | None = None
    source: Annotated[str, StringConstraints(max_length=64)] | None = None
    follow: bool = False
    wait_seconds: Annotated[float, Field(ge=0, le=30)] = 10.0


class LogSearchQuery(ListQuery):
    """``GET /logs``: the Log & Crash Search manner (only jobs created with ``useLog``)."""

    category: Literal["easymaker.training", "easymaker.inference"] = "easymaker.training"
    training_id: Annotated[str, StringConstraints(max_length=36)] | None = None
    endpoint_id: Annotated[str, StringConstraints(max_length=36)] | None = None
    endpoint_stage_id: Annotated[str, StringConstraints(max_length=36)] | None = None
    log_level: Literal["INFO", "WARNING", "ERROR"] | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: Annotated[str, StringConstraints(max_length=200)] | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
