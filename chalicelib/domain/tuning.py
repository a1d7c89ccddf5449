"""Hyperparameter tuning request and response shapes (the SDK's ``HyperparameterTuning``).

A tuning runs the training specification of ``chalicelib.domain.training`` many times
(trials), each with hyperparameters drawn from ``hyperparameterSpecList``. Rules between
fields and against the catalog live in ``chalicelib.services.tuning_spec`` so each error
names its field path.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StringConstraints, computed_field, model_validator

from chalicelib.domain.catalog import Algorithm, Flavor, HyperparameterType, Image
from chalicelib.domain.common import (
    MAX_HYPERPARAMETERS,
    Description,
    ListQuery,
    Parameter,
    ParameterName,
    ResourceName,
    StorageUri,
    Tag,
    UniqueTagList,
    WireDatetime,
    WireModel,
)
from chalicelib.domain.states import TrialStatus
from chalicelib.domain.training import MAX_INSTANCE_COUNT, ExperimentRef, StorageRef, TrainingSpec

# Katib's default metrics collector format: ``name=value`` anywhere in a log line.
DEFAULT_METRIC_REGEX = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
MAX_PARALLEL_TRIALS = 10
MAX_TRIALS = 1000
MAX_METRICS = 50
MAX_GRID_POINTS = 10_000
DEFAULT_MAX_FAILED_TRIALS = 3
DEFAULT_EARLY_STOPPING_MIN_TRIALS = 3
DEFAULT_EARLY_STOPPING_START_STEP = 4
# The SDK sends instanceCount = distributed nodes x parallel trials.
MAX_TUNING_INSTANCE_COUNT = MAX_INSTANCE_COUNT * MAX_PARALLEL_TRIALS


class TuningStrategy(StrEnum):
    GRID = "GRID"
    RANDOM = "RANDOM"
    BAYESIAN_OPTIMIZATION = "BAYESIAN_OPTIMIZATION"


class ObjectiveType(StrEnum):
    MINIMIZE = "MINIMIZE"
    MAXIMIZE = "MAXIMIZE"


class EarlyStoppingAlgorithm(StrEnum):
    MEDIAN = "MEDIAN"


class StatusDetail(StrEnum):
    """Why a tuning is COMPLETE (the guide's "状態詳細情報", shown in brackets)."""

    GOAL_REACHED = "GoalReached"
    MAX_TRIALS_REACHED = "MaxTrialsReached"
    SUGGESTION_END_REACHED = "SuggestionEndReached"


def _text(value: Any) -> Any:
    """JSON numbers become the strings the SDK would have sent (``0.1`` -> ``"0.1"``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _joined_values(value: Any) -> Any:
    """The wire form is one comma-separated string; a JSON list is accepted as well."""
    if isinstance(value, list | tuple):
        return ",".join(str(_text(item)) for item in value)
    return _text(value)


SpecValue = Annotated[str, BeforeValidator(_text), StringConstraints(max_length=64)]
SpecifiedValues = Annotated[
    str,
    BeforeValidator(_joined_values),
    StringConstraints(max_length=4096),
    Field(description="comma-separated values, e.g. 'sgd,adam' or '0.1,0.01'"),
]
MetricNameText = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\w|./:-]+$")
]


def _blank_is_default_regex(value: Any) -> Any:
    return DEFAULT_METRIC_REGEX if value is None or value == "" else value


MetricRegex = Annotated[
    str,
    BeforeValidator(_blank_is_default_regex),
    StringConstraints(min_length=1, max_length=1024),
    Field(description="two groups: metric name and value (Katib's format when absent)"),
]


class MetricName(WireModel):
    name: MetricNameText


class TuningHyperparameterSpec(WireModel):
    """One dimension of the search space, as the SDK sends it: every value a string.

    Not the catalog's ``HyperparameterSpec``, which describes what an algorithm accepts
    (optional, default, description) without the request's length and name rules.
    int/double use min, max and (on GRID) step; discrete/categorical use specified values.
    """

    hyperparameter_name: ParameterName
    hyperparameter_type_code: HyperparameterType
    hyperparameter_min_value: SpecValue | None = None
    hyperparameter_max_value: SpecValue | None = None
    hyperparameter_step: SpecValue | None = None
    hyperparameter_specified_values: SpecifiedValues | None = None


TuningHyperparameterSpecList = Annotated[
    list[TuningHyperparameterSpec],
    Field(min_length=1, max_length=MAX_HYPERPARAMETERS, description="1 to 100 dimensions"),
]


class HyperparameterTuningSpec(TrainingSpec):
    """A training specification plus the search: space, objective, strategy and budget.

    ``instanceCount`` counts every node of every parallel trial (the SDK sends
    ``distributedNodeCount * parallelTrialCount``); ``nodes_per_trial`` is one trial's share.
    """

    instance_count: Annotated[int, Field(ge=1, le=MAX_TUNING_INSTANCE_COUNT)] = 1
    parallel_trial_count: Annotated[int, Field(ge=1, le=MAX_PARALLEL_TRIALS)] = 1
    hyperparameter_spec_list: TuningHyperparameterSpecList
    metric_list: Annotated[list[MetricName], Field(max_length=MAX_METRICS)] = []
    metric_regex: MetricRegex = DEFAULT_METRIC_REGEX
    objective_metric: MetricName
    objective_type_code: ObjectiveType
    objective_goal: float | None = None
    max_failed_trial_count: Annotated[int, Field(ge=1, le=MAX_TRIALS)] = DEFAULT_MAX_FAILED_TRIALS
    max_trial_count: Annotated[int, Field(ge=1, le=MAX_TRIALS)]
    tuning_strategy_name: TuningStrategy
    tuning_strategy_random_state: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    early_stopping_algorithm: EarlyStoppingAlgorithm | None = None
    early_stopping_min_trial_count: Annotated[int, Field(ge=1, le=MAX_TRIALS)] = (
        DEFAULT_EARLY_STOPPING_MIN_TRIALS
    )
    early_stopping_start_step: Annotated[int, Field(ge=1, le=1_000_000)] = (
        DEFAULT_EARLY_STOPPING_START_STEP
    )

    @model_validator(mode="after")
    def _default_failures_within_budget(self) -> HyperparameterTuningSpec:
        # The default (3) must not refuse a small budget the user chose; an explicit value may.
        if "max_failed_trial_count" not in self.model_fields_set:
            self.max_failed_trial_count = min(DEFAULT_MAX_FAILED_TRIALS, self.max_trial_count)
        return self

    @property
    def nodes_per_trial(self) -> int:
        return self.instance_count // self.parallel_trial_count


class HyperparameterTuningCreate(HyperparameterTuningSpec):
    """``POST /hyperparameter-tunings`` (the SDK's ``HyperparameterTuningCreateBody``)."""

    hyperparameter_tuning_name: ResourceName
    description: Description | None = None
    experiment_id: Annotated[str, StringConstraints(min_length=1, max_length=36)] | None = None
    experiment_name: ResourceName | None = None
    experiment_description: Description | None = None
    # the console's "学習テンプレート": its values fill the fields the body leaves out
    training_template_id: Annotated[str, StringConstraints(min_length=1, max_length=36)] | None = (
        None
    )
    warm_start_hyperparameter_tuning_id: (
        Annotated[str, StringConstraints(min_length=1, max_length=36)] | None
    ) = None
    tag_list: UniqueTagList = []
    parent_pipeline_run_id: Annotated[str, Field(max_length=36)] | None = None
    parent_pipeline_run_task_name: Annotated[str, Field(max_length=255)] | None = None


class HyperparameterTuningCopy(WireModel):
    hyperparameter_tuning_name: ResourceName | None = None


class HyperparameterTuningQuery(ListQuery):
    hyperparameter_tuning_id_list: list[str] = []
    hyperparameter_tuning_name_list: list[str] = []
    hyperparameter_tuning_status_code_list: list[str] = []
    experiment_id: str | None = None
    experiment_id_list: list[str] = []


class TrialQuery(ListQuery):
    trial_status_code_list: list[TrialStatus] = []


class TrialMetric(WireModel):
    """A metric of one trial; values are strings on the wire, as the SDK reads them."""

    trial_metric_name: str
    trial_metric_min_value: str | None = None
    trial_metric_max_value: str | None = None
    trial_metric_latest_value: str | None = None


class Trial(WireModel):
    """One training run of a tuning (the SDK's ``Trial``)."""

    trial_id: str
    trial_name: str
    trial_status_code: TrialStatus
    status_reason: str | None = None
    hyperparameter_tuning_id: str
    hyperparameter_list: list[Parameter]
    trial_metric_list: list[TrialMetric] = []
    # the objective metric's value that ranks this trial (the guide's "目標指標値")
    objective_metric_value: float | None = None
    elapsed_time_seconds: int | None = None
    started_datetime: WireDatetime | None = None
    ended_datetime: WireDatetime | None = None
    created_datetime: WireDatetime
    updated_datetime: WireDatetime


class HyperparameterTuning(HyperparameterTuningSpec):
    """The wire shape of a tuning (what the SDK's ``HyperparameterTuning`` reads)."""

    hyperparameter_tuning_id: str
    hyperparameter_tuning_name: str
    description: str | None
    hyperparameter_tuning_status_code: str
    hyperparameter_tuning_status_reason: str | None = None
    hyperparameter_tuning_status_detail: StatusDetail | None = None
    experiment: ExperimentRef
    experiment_id: str
    flavor: Flavor
    image: Image
    algorithm: Algorithm | None = None
    boot_storage: StorageRef
    data_storage_list: list[StorageRef]
    training_template_id: str | None = None
    warm_start_hyperparameter_tuning_id: str | None = None
    successful_trial_count: int = 0
    running_trial_count: int = 0
    failed_trial_count: int = 0
    early_stopped_trial_count: int = 0
    killed_trial_count: int = 0
    metrics_unavailable_trial_count: int = 0
    optimal_trial_id: str | None = None
    optimal_trial: Trial | None = None
    tensorboard_access_uri: str | None = None
    tensorboard_access_path: str | None = None
    log_and_crash_app_key: str | None = None
    elapsed_time_seconds: int | None = None
    started_datetime: WireDatetime | None = None
    ended_datetime: WireDatetime | None = None
    tag_list: list[Tag]
    app_key: str
    created_datetime: WireDatetime
    updated_datetime: WireDatetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def objective_metric_name(self) -> str:
        """What the SDK reads back (it sends ``objectiveMetric: {name}``)."""
        return self.objective_metric.name


CatalogId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class HyperparameterTuningCreateBody(HyperparameterTuningCreate):
    """The request body: with ``trainingTemplateId``, the template may supply the image, the
    flavor and the model output (the service checks the merged body is complete)."""

    image_id: CatalogId | None = None  # type: ignore[assignment]
    flavor_id: CatalogId | None = None  # type: ignore[assignment]
    model_upload_uri: StorageUri | None = None  # type: ignore[assignment]
