"""Hyperparameter tuning specification: the SDK's body, the refusals and the search space."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
from easymaker.api.request_body import HyperparameterTuningCreateBody
from easymaker.common.base_model.hyperparameter_tuning_base_model import (
    HyperparameterTuningBaseModel,
)
from easymaker.training.components import Dataset, HyperparameterSpec, Metric

from chalicelib.domain.catalog import HyperparameterType
from chalicelib.domain.tuning import (
    DEFAULT_METRIC_REGEX,
    HyperparameterTuning,
    HyperparameterTuningCreate,
    TrialQuery,
    TuningHyperparameterSpec,
)
from chalicelib.errors import ValidationError
from chalicelib.services.catalog import Catalog, get_catalog
from chalicelib.services.tuning_spec import (
    dimension_points,
    grid_points,
    search_space_size,
    validate_tuning_spec,
)

CPU_TRAINING_IMAGE = "8e7871af-9df1-5510-87fd-e373a6821494"
NOTEBOOK_IMAGE = "71d69c64-02cc-5bdf-9906-587f7e5fa190"
CPU_FLAVOR = "77889311-a771-53e4-88c4-e8621ecefa08"  # m2.c4m8
SKLEARN = "5fefdbd3-ce6b-5941-a20a-21ff21a1a726"


@pytest.fixture
def catalog(openmaker_home: Path) -> Catalog:
    return get_catalog()


def sdk_body(**overrides: Any) -> dict[str, Any]:
    """What ``easymaker.HyperparameterTuning().run(...)`` posts for an own algorithm."""
    values: dict[str, Any] = {
        "hyperparameter_tuning_name": "tune-mnist",
        "description": "learning rate and optimizer",
        "image_id": CPU_TRAINING_IMAGE,
        "flavor_id": CPU_FLAVOR,
        "instance_count": 1 * 2,  # distributed_node_count x parallel_trial_count
        "parallel_trial_count": 2,
        "source_dir_uri": "file:///tmp/src",
        "entry_point": "train.py",
        "hyperparameter_spec_list": [
            HyperparameterSpec(
                hyperparameter_name="learning_rate",
                hyperparameter_type_code="double",
                hyperparameter_min_value="0.0001",
                hyperparameter_max_value="0.1",
            ),
            HyperparameterSpec(
                hyperparameter_name="optimizer",
                hyperparameter_type_code="categorical",
                hyperparameter_specified_values="sgd,adam",
            ),
        ],
        "dataset_list": [Dataset(dataset_name="train", data_uri="file:///tmp/data")],
        "model_upload_uri": "file:///tmp/model",
        "timeout_minutes": 720 * 60,
        "use_log": False,
        "metric_list": [Metric(name="loss"), Metric(name="accuracy")],
        "metric_regex": None,
        "objective_metric": {"name": "loss"},
        "objective_type_code": "MINIMIZE",
        "objective_goal": None,
        "max_failed_trial_count": None,
        "max_trial_count": 8,
        "tuning_strategy_name": "BAYESIAN_OPTIMIZATION",
        "tuning_strategy_random_state": 7,
        "early_stopping_algorithm": "MEDIAN",
        "early_stopping_min_trial_count": 3,
        "early_stopping_start_step": 4,
        "use_torchrun": False,
        "nproc_per_node": 1,
    }
    values.update(overrides)
    return HyperparameterTuningCreateBody(**values).model_dump()


def sklearn_body(**overrides: Any) -> dict[str, Any]:
    """A built-in algorithm tuning: sklearn_classifier over n_estimators and criterion."""
    values: dict[str, Any] = {
        "algorithm_id": SKLEARN,
        "source_dir_uri": None,
        "entry_point": None,
        "hyperparameter_spec_list": [
            HyperparameterSpec(
                hyperparameter_name="n_estimators",
                hyperparameter_type_code="int",
                hyperparameter_min_value="10",
                hyperparameter_max_value="50",
                hyperparameter_step="10",
            ),
            HyperparameterSpec(
                hyperparameter_name="criterion",
                hyperparameter_type_code="categorical",
                hyperparameter_specified_values="gini,entropy",
            ),
        ],
        "metric_list": None,
        "objective_metric": {"name": "accuracy"},
        "objective_type_code": "MAXIMIZE",
        "tuning_strategy_name": "GRID",
        "max_trial_count": 10,
    }
    values.update(overrides)
    return sdk_body(**values)


def problems_of(body: dict[str, Any], catalog: Catalog) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as caught:
        validate_tuning_spec(HyperparameterTuningCreate.model_validate(body), catalog)
    return caught.value.details


def refused(body: dict[str, Any], catalog: Catalog) -> set[tuple[str, str]]:
    return {(item["field"], item["rule"]) for item in problems_of(body, catalog)}


def spec(name: str, kind: str, **values: Any) -> dict[str, Any]:
    item = {"hyperparameterName": name, "hyperparameterTypeCode": kind}
    item.update({f"hyperparameter{key[0].upper()}{key[1:]}": v for key, v in values.items()})
    return item


def dimension(name: str, kind: str, **values: Any) -> TuningHyperparameterSpec:
    return TuningHyperparameterSpec.model_validate(spec(name, kind, **values))


# -- the SDK's body ----------------------------------------------------------------------------


def test_the_sdk_body_for_an_own_algorithm_validates(catalog: Catalog) -> None:
    body = HyperparameterTuningCreate.model_validate(sdk_body())

    validate_tuning_spec(body, catalog)

    assert body.nodes_per_trial == 1
    assert body.parallel_trial_count == 2
    assert body.metric_regex == DEFAULT_METRIC_REGEX
    assert body.max_failed_trial_count == 3
    assert [m.name for m in body.metric_list] == ["loss", "accuracy"]
    assert body.hyperparameter_spec_list[1].hyperparameter_specified_values == "sgd,adam"


def test_distributed_nodes_times_parallel_trials_may_exceed_ten_instances(
    catalog: Catalog,
) -> None:
    body = HyperparameterTuningCreate.model_validate(
        sdk_body(instance_count=4 * 5, parallel_trial_count=5)
    )

    validate_tuning_spec(body, catalog)

    assert body.nodes_per_trial == 4


def test_a_built_in_algorithm_tuning_in_range_passes(catalog: Catalog) -> None:
    body = HyperparameterTuningCreate.model_validate(sklearn_body())

    validate_tuning_spec(body, catalog)

    assert grid_points(body.hyperparameter_spec_list) == [
        ["10", "20", "30", "40", "50"],
        ["gini", "entropy"],
    ]
    assert search_space_size(body.hyperparameter_spec_list) == 10


def test_a_built_in_algorithm_tuning_out_of_range_is_refused(catalog: Catalog) -> None:
    body = sklearn_body()
    body["hyperparameterSpecList"][0].update(
        hyperparameterMinValue="0", hyperparameterMaxValue="5000", hyperparameterStep="1000"
    )
    body["hyperparameterSpecList"][1]["hyperparameterSpecifiedValues"] = "gini,mse"

    assert refused(body, catalog) == {
        ("hyperparameterSpecList.0.hyperparameterMinValue", "hyperparameter_spec"),
        ("hyperparameterSpecList.0.hyperparameterMaxValue", "hyperparameter_spec"),
        ("hyperparameterSpecList.1.hyperparameterSpecifiedValues", "hyperparameter_spec"),
    }


def test_a_built_in_algorithm_refuses_unknown_names_and_other_types(catalog: Catalog) -> None:
    body = sklearn_body(tuning_strategy_name="RANDOM")
    body["hyperparameterSpecList"] = [
        spec("learning_rate", "double", minValue="0.1", maxValue="1"),
        spec("criterion", "int", minValue="1", maxValue="2"),
        spec("max_depth", "double", minValue="1", maxValue="10"),
    ]

    assert refused(body, catalog) == {
        ("hyperparameterSpecList.0.hyperparameterName", "unknown"),
        ("hyperparameterSpecList.1.hyperparameterTypeCode", "type"),
        ("hyperparameterSpecList.2.hyperparameterTypeCode", "type"),
    }


def test_a_built_in_algorithm_accepts_discrete_values_inside_its_range(catalog: Catalog) -> None:
    body = sklearn_body()
    body["hyperparameterSpecList"] = [spec("max_depth", "discrete", specifiedValues="2,4,8")]
    validate_tuning_spec(HyperparameterTuningCreate.model_validate(body), catalog)

    body["hyperparameterSpecList"] = [spec("max_depth", "discrete", specifiedValues="2,4.5")]
    assert refused(body, catalog) == {
        ("hyperparameterSpecList.0.hyperparameterSpecifiedValues", "hyperparameter_spec")
    }


def test_fixed_hyperparameters_of_a_built_in_algorithm_are_checked_as_for_a_training(
    catalog: Catalog,
) -> None:
    body = sklearn_body()
    body["hyperparameterList"] = [
        {"parameterName": "random_state", "parameterValue": "-1"},
        {"parameterName": "bogus", "parameterValue": "1"},
    ]

    assert refused(body, catalog) == {
        ("hyperparameterList.0.parameterValue", "hyperparameter_spec"),
        ("hyperparameterList.1.parameterName", "unknown"),
    }


def test_a_required_algorithm_hyperparameter_may_be_explored_instead_of_fixed(
    catalog: Catalog,
) -> None:
    algorithm = catalog.algorithm(SKLEARN)
    required = [
        hp.model_copy(update={"is_optional": False, "default_value": None})
        if hp.hyperparameter_name == "n_estimators"
        else hp
        for hp in algorithm.hyperparameter_spec_list
    ]
    strict = dataclasses.replace(
        catalog,
        algorithms=(algorithm.model_copy(update={"hyperparameter_spec_list": required}),),
    )

    validate_tuning_spec(HyperparameterTuningCreate.model_validate(sklearn_body()), strict)

    body = sklearn_body()
    body["hyperparameterSpecList"] = body["hyperparameterSpecList"][1:]
    assert refused(body, strict) == {("hyperparameterList", "missing")}


def test_an_algorithm_metric_may_be_the_objective_without_a_metric_list(
    catalog: Catalog,
) -> None:
    body = sklearn_body(objective_metric={"name": "f1_macro"})
    validate_tuning_spec(HyperparameterTuningCreate.model_validate(body), catalog)

    body = sklearn_body(objective_metric={"name": "loss"})
    assert refused(body, catalog) == {("objectiveMetric.name", "unknown_metric")}


def test_the_shared_training_fields_are_checked_for_the_tuning_group(catalog: Catalog) -> None:
    body = sdk_body(image_id=NOTEBOOK_IMAGE, flavor_id="no-such-flavor")

    assert refused(body, catalog) == {("imageId", "image_type"), ("flavorId", "not_found")}


def test_every_problem_is_named_in_one_error(catalog: Catalog) -> None:
    body = sdk_body(max_failed_trial_count=20, instance_count=3, metric_regex="(")
    body["hyperparameterSpecList"][0]["hyperparameterMinValue"] = "big"

    details = problems_of(body, catalog)

    assert {d["field"] for d in details} == {
        "hyperparameterSpecList.0.hyperparameterMinValue",
        "maxFailedTrialCount",
        "instanceCount",
        "metricRegex",
    }
    assert all(d["message"] for d in details)


# -- refusals, each naming its field and rule --------------------------------------------------


def _with_spec(
    *items: dict[str, Any], fixed: list[dict[str, str]] | None = None, **overrides: Any
) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        body = sdk_body(**overrides)
        body["hyperparameterSpecList"] = list(items)
        if fixed is not None:  # the SDK's tuning body has no hyperparameterList; others may
            body["hyperparameterList"] = fixed
        return body

    return build


def _with(**overrides: Any) -> Callable[[], dict[str, Any]]:
    return lambda: sdk_body(**overrides)


LR = spec("lr", "double", minValue="0.1", maxValue="1")
GRID: dict[str, Any] = {"tuning_strategy_name": "GRID"}

REFUSALS: list[tuple[str, Callable[[], dict[str, Any]], str, str]] = [
    (
        "min above max",
        _with_spec(spec("lr", "double", minValue="2", maxValue="1")),
        "hyperparameterSpecList.0.hyperparameterMinValue",
        "range",
    ),
    (
        "int min above max at the third dimension",
        _with_spec(
            LR, LR | {"hyperparameterName": "wd"}, spec("n", "int", minValue=9, maxValue=3)
        ),
        "hyperparameterSpecList.2.hyperparameterMinValue",
        "range",
    ),
    (
        "a non-numeric min",
        _with_spec(spec("lr", "double", minValue="low", maxValue="1")),
        "hyperparameterSpecList.0.hyperparameterMinValue",
        "number",
    ),
    (
        "a non-numeric max",
        _with_spec(spec("lr", "double", minValue="0", maxValue="1,5")),
        "hyperparameterSpecList.0.hyperparameterMaxValue",
        "number",
    ),
    (
        "a NaN min",
        _with_spec(spec("lr", "double", minValue="nan", maxValue="1")),
        "hyperparameterSpecList.0.hyperparameterMinValue",
        "number",
    ),
    (
        "an infinite max",
        _with_spec(spec("lr", "double", minValue="0", maxValue="1e999")),
        "hyperparameterSpecList.0.hyperparameterMaxValue",
        "number",
    ),
    (
        "a non-numeric step",
        _with_spec(spec("lr", "double", minValue="0", maxValue="1", step="tiny")),
        "hyperparameterSpecList.0.hyperparameterStep",
        "number",
    ),
    (
        "a step of zero",
        _with_spec(spec("lr", "double", minValue="0", maxValue="1", step="0")),
        "hyperparameterSpecList.0.hyperparameterStep",
        "positive",
    ),
    (
        "a negative step",
        _with_spec(spec("n", "int", minValue="0", maxValue="10", step="-1")),
        "hyperparameterSpecList.0.hyperparameterStep",
        "positive",
    ),
    (
        "a missing max",
        _with_spec(spec("lr", "double", minValue="0")),
        "hyperparameterSpecList.0.hyperparameterMaxValue",
        "missing",
    ),
    (
        "an int bound that is not an integer",
        _with_spec(spec("n", "int", minValue="1.5", maxValue="10")),
        "hyperparameterSpecList.0.hyperparameterMinValue",
        "integer",
    ),
    (
        "an int step that is not an integer",
        _with_spec(spec("n", "int", minValue="1", maxValue="10", step="0.5")),
        "hyperparameterSpecList.0.hyperparameterStep",
        "integer",
    ),
    (
        "GRID over a double without a step",
        _with_spec(LR, **GRID),
        "hyperparameterSpecList.0.hyperparameterStep",
        "grid_step",
    ),
    (
        "GRID over an int without a step",
        _with_spec(spec("n", "int", minValue="1", maxValue="5"), **GRID),
        "hyperparameterSpecList.0.hyperparameterStep",
        "grid_step",
    ),
    (
        "GRID with a double step that does not divide the range",
        _with_spec(spec("lr", "double", minValue="0", maxValue="1", step="0.3"), **GRID),
        "hyperparameterSpecList.0.hyperparameterStep",
        "grid_step",
    ),
    (
        "GRID with an int step that does not divide the range",
        _with_spec(spec("n", "int", minValue="1", maxValue="10", step="2"), **GRID),
        "hyperparameterSpecList.0.hyperparameterStep",
        "grid_step",
    ),
    (
        "GRID above 10,000 points",
        _with_spec(
            spec("a", "int", minValue="1", maxValue="100", step="1"),
            spec("b", "int", minValue="1", maxValue="100", step="1"),
            spec("c", "categorical", specifiedValues="x,y"),
            **GRID,
        ),
        "hyperparameterSpecList",
        "grid_size",
    ),
    (
        "categorical without values",
        _with_spec(spec("opt", "categorical")),
        "hyperparameterSpecList.0.hyperparameterSpecifiedValues",
        "values",
    ),
    (
        "categorical with a repeated value",
        _with_spec(spec("opt", "categorical", specifiedValues="sgd, adam,sgd")),
        "hyperparameterSpecList.0.hyperparameterSpecifiedValues",
        "values",
    ),
    (
        "categorical with an empty value",
        _with_spec(spec("opt", "categorical", specifiedValues="sgd,,adam")),
        "hyperparameterSpecList.0.hyperparameterSpecifiedValues",
        "values",
    ),
    (
        "discrete without values",
        _with_spec(spec("bs", "discrete", specifiedValues=" ")),
        "hyperparameterSpecList.0.hyperparameterSpecifiedValues",
        "values",
    ),
    (
        "discrete with a non-numeric value",
        _with_spec(spec("bs", "discrete", specifiedValues="16,32,big")),
        "hyperparameterSpecList.0.hyperparameterSpecifiedValues",
        "number",
    ),
    (
        "discrete with the same number twice",
        _with_spec(spec("bs", "discrete", specifiedValues="16,32,16.0")),
        "hyperparameterSpecList.0.hyperparameterSpecifiedValues",
        "values",
    ),
    (
        "a name explored twice",
        _with_spec(LR, LR),
        "hyperparameterSpecList.1.hyperparameterName",
        "duplicate",
    ),
    (
        "a name both explored and fixed",
        _with_spec(LR, fixed=[{"parameterName": "lr", "parameterValue": "0.1"}]),
        "hyperparameterList.0.parameterName",
        "duplicate",
    ),
    (
        "an objective metric missing from metricList",
        _with(objective_metric={"name": "f1"}),
        "objectiveMetric.name",
        "unknown_metric",
    ),
    (
        "a metric listed twice",
        _with(metric_list=[Metric(name="loss"), Metric(name="loss")]),
        "metricList.1.name",
        "duplicate",
    ),
    (
        "a metric regex that does not compile",
        _with(metric_regex=r"([\w]+=(\d+)"),
        "metricRegex",
        "regex",
    ),
    (
        "a metric regex with one group",
        _with(metric_regex=r"loss=(\d+)"),
        "metricRegex",
        "regex",
    ),
    (
        "more failures allowed than trials",
        _with(max_failed_trial_count=9),
        "maxFailedTrialCount",
        "le",
    ),
    (
        "more parallel trials than trials",
        _with(max_trial_count=2, parallel_trial_count=4, instance_count=4),
        "parallelTrialCount",
        "le",
    ),
    (
        "instances that do not split over the parallel trials",
        _with(instance_count=3, parallel_trial_count=2),
        "instanceCount",
        "multiple",
    ),
    (
        "fewer instances than parallel trials",
        _with(instance_count=1, parallel_trial_count=2),
        "instanceCount",
        "multiple",
    ),
    (
        "more than ten nodes per trial",
        _with(instance_count=22, parallel_trial_count=2),
        "instanceCount",
        "le",
    ),
    ("an infinite objective goal", _with(objective_goal=float("inf")), "objectiveGoal", "finite"),
    ("a NaN objective goal", _with(objective_goal=float("nan")), "objectiveGoal", "finite"),
]


@pytest.mark.parametrize(
    ("build", "field", "rule"),
    [pytest.param(build, field, rule, id=case) for case, build, field, rule in REFUSALS],
)
def test_a_refusal_names_its_field_and_rule(
    catalog: Catalog, build: Callable[[], dict[str, Any]], field: str, rule: str
) -> None:
    assert refused(build(), catalog) == {(field, rule)}


@pytest.mark.parametrize(
    ("overrides", "location", "kind"),
    [
        ({"max_trial_count": 0}, ("maxTrialCount",), "greater_than_equal"),
        ({"max_trial_count": 1001}, ("maxTrialCount",), "less_than_equal"),
        (
            {"parallel_trial_count": 11, "instance_count": 11},
            ("parallelTrialCount",),
            "less_than_equal",
        ),
        ({"instance_count": 101}, ("instanceCount",), "less_than_equal"),
        ({"hyperparameter_spec_list": []}, ("hyperparameterSpecList",), "too_short"),
        ({"objective_type_code": "BIGGER"}, ("objectiveTypeCode",), "enum"),
        ({"tuning_strategy_name": None}, ("tuningStrategyName",), "missing"),
        ({"objective_metric": None}, ("objectiveMetric",), "missing"),
        (
            {"tuning_strategy_random_state": -1},
            ("tuningStrategyRandomState",),
            "greater_than_equal",
        ),
        (
            {"early_stopping_min_trial_count": 0},
            ("earlyStoppingMinTrialCount",),
            "greater_than_equal",
        ),
        ({"early_stopping_start_step": 0}, ("earlyStoppingStartStep",), "greater_than_equal"),
    ],
)
def test_field_limits_are_pydantic_errors_named_by_the_wire_field(
    overrides: dict[str, Any], location: tuple[str, ...], kind: str
) -> None:
    body = sdk_body(**{k: v for k, v in overrides.items() if k != "objective_type_code"})
    if "objective_type_code" in overrides:
        body["objectiveTypeCode"] = overrides["objective_type_code"]

    with pytest.raises(pydantic.ValidationError) as caught:
        HyperparameterTuningCreate.model_validate(body)

    assert (location, kind) in {(e["loc"], e["type"]) for e in caught.value.errors()}


@pytest.mark.parametrize("strategy", ["RANDOM", "GRID", "BAYESIAN_OPTIMIZATION"])
def test_median_early_stopping_works_with_every_strategy(catalog: Catalog, strategy: str) -> None:
    body = sdk_body(tuning_strategy_name=strategy, early_stopping_algorithm="MEDIAN")
    body["hyperparameterSpecList"] = [
        spec("lr", "double", minValue="0.1", maxValue="0.5", step="0.1"),
        spec("opt", "categorical", specifiedValues="sgd,adam"),
    ]

    validate_tuning_spec(HyperparameterTuningCreate.model_validate(body), catalog)


def test_the_default_failure_budget_shrinks_to_a_small_trial_budget(catalog: Catalog) -> None:
    body = HyperparameterTuningCreate.model_validate(
        sdk_body(max_trial_count=1, parallel_trial_count=1, instance_count=1)
    )

    validate_tuning_spec(body, catalog)

    assert body.max_failed_trial_count == 1


def test_json_numbers_and_value_lists_become_the_sdk_strings() -> None:
    item = TuningHyperparameterSpec.model_validate(
        {
            "hyperparameterName": "bs",
            "hyperparameterTypeCode": "discrete",
            "hyperparameterSpecifiedValues": [16, 32.5],
            "hyperparameterMinValue": 1,
        }
    )

    assert item.hyperparameter_specified_values == "16,32.5"
    assert item.hyperparameter_min_value == "1"


# -- the search space -------------------------------------------------------------------------


def test_grid_points_of_each_type_are_strings_in_order() -> None:
    dimensions = [
        dimension("n", "int", minValue="1", maxValue="10", step="3"),
        dimension("lr", "double", minValue="0.1", maxValue="0.5", step="0.1"),
        dimension("bs", "discrete", specifiedValues="64, 16,32"),
        dimension("opt", "categorical", specifiedValues="sgd,adam"),
    ]

    assert grid_points(dimensions) == [
        ["1", "4", "7", "10"],
        ["0.1", "0.2", "0.3", "0.4", "0.5"],
        ["64", "16", "32"],
        ["sgd", "adam"],
    ]
    assert search_space_size(dimensions) == 4 * 5 * 3 * 2


def test_a_step_within_the_tolerance_lands_on_the_max() -> None:
    third = dimension("x", "double", minValue="0", maxValue="1", step="0.333333333333")

    assert dimension_points(third) == ["0.0", "0.333333333333", "0.666666666666", "1.0"]


def test_a_double_without_a_step_is_continuous() -> None:
    lr = dimension("lr", "double", minValue="0.001", maxValue="0.1")

    assert search_space_size([lr, dimension("opt", "categorical", specifiedValues="a")]) is None
    with pytest.raises(ValueError, match="continuous"):
        dimension_points(lr)


def test_an_int_without_a_step_takes_every_integer() -> None:
    assert search_space_size([dimension("n", "int", minValue="-2", maxValue="2")]) == 5
    assert dimension_points(dimension("n", "int", minValue="-2", maxValue="2")) == [
        "-2",
        "-1",
        "0",
        "1",
        "2",
    ]


def test_an_int_step_that_overshoots_stops_inside_the_range() -> None:
    n = dimension("n", "int", minValue="1", maxValue="10", step="4")

    assert dimension_points(n) == ["1", "5", "9"]
    assert search_space_size([n]) == 3


def test_the_catalog_specs_span_a_search_space_too(catalog: Catalog) -> None:
    specs = {
        hp.hyperparameter_name: hp for hp in catalog.algorithm(SKLEARN).hyperparameter_spec_list
    }

    assert specs["criterion"].hyperparameter_type_code == HyperparameterType.CATEGORICAL
    assert search_space_size([specs["criterion"], specs["max_depth"]]) == 3 * 100
    assert search_space_size([specs["validation_fraction"]]) is None


# -- the view ---------------------------------------------------------------------------------


def test_the_sdk_reads_a_tuning_view(catalog: Catalog) -> None:
    create = HyperparameterTuningCreate.model_validate(sdk_body())
    trial = {
        "trialId": "trial-1",
        "trialName": "tune-mnist-1",
        "trialStatusCode": "SUCCEEDED",
        "hyperparameterTuningId": "tuning-1",
        "hyperparameterList": [{"parameterName": "learning_rate", "parameterValue": "0.01"}],
        "trialMetricList": [
            {
                "trialMetricName": "loss",
                "trialMetricMinValue": "0.1",
                "trialMetricMaxValue": "0.9",
                "trialMetricLatestValue": "0.1",
            }
        ],
        "objectiveMetricValue": 0.1,
        "createdDatetime": "2024-01-01T00:00:00",
        "updatedDatetime": "2024-01-01T00:10:00",
    }
    view = HyperparameterTuning.model_validate(
        create.model_dump(by_alias=True)
        | {
            "hyperparameterTuningId": "tuning-1",
            "hyperparameterTuningStatusCode": "COMPLETE",
            "hyperparameterTuningStatusDetail": "MaxTrialsReached",
            "experiment": {"experimentId": "exp-1", "experimentName": "mnist"},
            "experimentId": "exp-1",
            "flavor": catalog.flavor(CPU_FLAVOR).model_dump(by_alias=True),
            "image": catalog.image(CPU_TRAINING_IMAGE).model_dump(by_alias=True),
            "bootStorage": {"storageSize": 50},
            "dataStorageList": [],
            "successfulTrialCount": 7,
            "earlyStoppedTrialCount": 1,
            "optimalTrialId": "trial-1",
            "optimalTrial": trial,
            "appKey": "appkey",
            "createdDatetime": "2024-01-01T00:00:00",
            "updatedDatetime": "2024-01-01T01:00:00",
        }
    )
    wire = view.model_dump(mode="json", by_alias=True)

    # the SDK fetches a nested experiment by id (GET /experiments/{id}): no network here
    read = HyperparameterTuningBaseModel.model_validate(wire | {"experiment": None})

    assert read.hyperparameter_tuning_status_code == "COMPLETE"
    assert read.objective_metric_name == "loss"
    assert [m.name for m in read.metric_list or []] == ["loss", "accuracy"]
    assert read.parallel_trial_count == 2
    assert read.optimal_trial is not None
    assert read.optimal_trial.trial_metric_list[0].trial_metric_latest_value == "0.1"
    assert wire["hyperparameterTuningStatusDetail"] == "MaxTrialsReached"
    assert wire["createdDatetime"] == "2024-01-01T00:00:00.000+00:00"


def test_trials_are_filtered_by_known_statuses_only() -> None:
    assert TrialQuery.model_validate({"trialStatusCodeList": ["EARLY_STOPPED"]})
    with pytest.raises(pydantic.ValidationError):
        TrialQuery.model_validate({"trialStatusCodeList": ["DONE"]})
