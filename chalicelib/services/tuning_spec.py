"""Checks of a hyperparameter tuning specification, and the search space it spans.

``validate_tuning_spec`` refuses a tuning the way ``validate_training_spec`` refuses a
training: every problem at once, each naming its field path and rule. ``grid_points`` and
``search_space_size`` are pure functions of the dimensions, shared with the tuning driver.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from decimal import ROUND_FLOOR, Decimal, InvalidOperation, localcontext
from typing import Protocol

from chalicelib.domain.catalog import (
    Algorithm,
    GroupType,
    HyperparameterType,
)
from chalicelib.domain.training import MAX_INSTANCE_COUNT
from chalicelib.domain.tuning import (
    MAX_GRID_POINTS,
    HyperparameterTuningSpec,
    TuningHyperparameterSpec,
    TuningStrategy,
)
from chalicelib.errors import NotFoundError, ValidationError
from chalicelib.services.catalog import Catalog
from chalicelib.services.training_spec import (
    SpecProblems,
    check_hyperparameter_value,
    validate_training_spec,
)

# Exact sums and differences of any two float-sized decimals (5e-324 to 1.8e308, 64 digits).
EXACT_DIGITS = 800
# A double step "divides" the range when the step count is this close to a whole number
# (relative to the count, at most a thousandth of a step): "0.1" steps of "0.3" are three.
GRID_TOLERANCE = Decimal("1e-9")
GRID_TOLERANCE_CAP = Decimal("1e-3")

INT, DOUBLE = HyperparameterType.INT, HyperparameterType.DOUBLE
DISCRETE, CATEGORICAL = HyperparameterType.DISCRETE, HyperparameterType.CATEGORICAL
RANGED = frozenset({INT, DOUBLE})
# Which tuning types may explore an algorithm hyperparameter of a given type.
COMPATIBLE_TYPES: dict[HyperparameterType, frozenset[HyperparameterType]] = {
    INT: frozenset({INT, DISCRETE}),
    DOUBLE: frozenset({DOUBLE, INT, DISCRETE}),
    DISCRETE: frozenset({DISCRETE}),
    CATEGORICAL: frozenset({CATEGORICAL}),
}
MIN, MAX, STEP, VALUES = (
    "hyperparameterMinValue",
    "hyperparameterMaxValue",
    "hyperparameterStep",
    "hyperparameterSpecifiedValues",
)


class SearchDimension(Protocol):
    """One hyperparameter's range: a request's ``TuningHyperparameterSpec`` or the catalog's
    ``HyperparameterSpec`` (both carry these camelCase fields as strings)."""

    @property
    def hyperparameter_name(self) -> str: ...
    @property
    def hyperparameter_type_code(self) -> HyperparameterType: ...
    @property
    def hyperparameter_min_value(self) -> str | None: ...
    @property
    def hyperparameter_max_value(self) -> str | None: ...
    @property
    def hyperparameter_step(self) -> str | None: ...
    @property
    def hyperparameter_specified_values(self) -> str | None: ...


# -- the search space ------------------------------------------------------------------------


def parse_number(text: str | None) -> Decimal | None:
    """``text`` as an exact finite number that a float can hold (no overflow or underflow)."""
    if text is None:
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    approximate = float(value)
    if not math.isfinite(approximate) or (approximate == 0 and value != 0):
        return None
    return value


def parse_integer(text: str | None) -> int | None:
    """``text`` as Python's ``int()`` reads it (what an int hyperparameter value must be)."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def specified_values(text: str | None) -> list[str]:
    """The comma-separated values, stripped, in order ('' stays, for validation to see)."""
    if text is None or not text.strip():
        return []
    return [value.strip() for value in text.split(",")]


def _step_count(low: Decimal, high: Decimal, step: Decimal) -> tuple[int, bool]:
    """Whole steps from ``low`` that stay within ``high``, and whether the last lands on it."""
    with localcontext(prec=EXACT_DIGITS):
        ratio = (high - low) / step
    nearest = ratio.to_integral_value()
    tolerance = min(GRID_TOLERANCE * max(Decimal(1), abs(ratio)), GRID_TOLERANCE_CAP)
    if abs(ratio - nearest) <= tolerance:
        return int(nearest), True
    return int(ratio.to_integral_value(rounding=ROUND_FLOOR)), False


def _bounds(spec: SearchDimension) -> tuple[Decimal, Decimal, Decimal | None]:
    low = parse_number(spec.hyperparameter_min_value)
    high = parse_number(spec.hyperparameter_max_value)
    step = parse_number(spec.hyperparameter_step)
    if low is None or high is None or low > high or (step is not None and step <= 0):
        raise ValueError(f"{spec.hyperparameter_name} has no valid range")
    if spec.hyperparameter_type_code == INT and step is None:
        step = Decimal(1)
    return low, high, step


def dimension_size(spec: SearchDimension) -> int | None:
    """How many values one dimension takes; None when it is continuous (double, no step).

    An int without a step takes every integer; a double with a step is discretized
    (Optuna's ``suggest_float(step=...)``). Raises ``ValueError`` on a malformed dimension.
    """
    if spec.hyperparameter_type_code not in RANGED:
        return len(specified_values(spec.hyperparameter_specified_values))
    low, high, step = _bounds(spec)
    if step is None:
        return None
    return _step_count(low, high, step)[0] + 1


def dimension_points(spec: SearchDimension) -> list[str]:
    """The values one dimension takes on a GRID, as strings, in order.

    Ints print as integers, doubles as Python floats print (``"0.1"``, ``"1e-05"``); a
    last step landing on the max (within ``GRID_TOLERANCE``) gives the max itself.
    Raises ``ValueError`` for a continuous or malformed dimension.
    """
    kind = spec.hyperparameter_type_code
    if kind not in RANGED:
        return specified_values(spec.hyperparameter_specified_values)
    low, high, step = _bounds(spec)
    if step is None:
        raise ValueError(f"{spec.hyperparameter_name} is continuous: a grid needs a step")
    count, lands = _step_count(low, high, step)
    with localcontext(prec=EXACT_DIGITS):
        points = [low + index * step for index in range(count + 1)]
    if lands:
        points[-1] = high
    if kind == INT:
        return [str(int(point)) for point in points]
    return [str(float(point)) for point in points]


def grid_points(spec_list: Sequence[SearchDimension]) -> list[list[str]]:
    """Each dimension's values on a GRID, in the order of ``spec_list``."""
    return [dimension_points(spec) for spec in spec_list]


def search_space_size(spec_list: Sequence[SearchDimension]) -> int | None:
    """How many distinct combinations exist; None when any dimension is continuous."""
    total = 1
    for spec in spec_list:
        size = dimension_size(spec)
        if size is None:
            return None
        total *= size
    return total


# -- validation ------------------------------------------------------------------------------

_TUNING = GroupType.HYPERPARAMETER_TUNING


def validate_tuning_spec(spec: HyperparameterTuningSpec, catalog: Catalog) -> None:
    """Raise ``ValidationError`` naming each field the catalog or the search rules refute.

    The training fields are checked as a training's are (image, flavor, algorithm, fixed
    ``hyperparameterList`` values, datasets), for the HYPERPARAMETER_TUNING group; a built-in
    algorithm's required hyperparameter counts as given when the search explores it.
    """
    problems = SpecProblems()
    algorithm = _algorithm_or_none(spec, catalog)
    try:
        validate_training_spec(spec, _exploring(catalog, algorithm, spec), _TUNING)
    except ValidationError as exc:
        problems.items.extend(exc.details)
    well_formed = [
        _check_dimension(f"hyperparameterSpecList.{index}", dimension, spec, problems)
        for index, dimension in enumerate(spec.hyperparameter_spec_list)
    ]
    _check_names(spec, problems)
    if spec.tuning_strategy_name == TuningStrategy.GRID and all(well_formed):
        _check_grid_size(spec.hyperparameter_spec_list, problems)
    if algorithm is not None:
        for index, dimension in enumerate(spec.hyperparameter_spec_list):
            if well_formed[index]:
                _check_against_algorithm(index, dimension, algorithm, problems)
    _check_metrics(spec, algorithm, problems)
    _check_budget(spec, problems)
    problems.raise_if_any()


def _algorithm_or_none(spec: HyperparameterTuningSpec, catalog: Catalog) -> Algorithm | None:
    if not spec.algorithm_id:
        return None
    try:
        return catalog.algorithm(spec.algorithm_id)
    except NotFoundError:
        return None  # validate_training_spec names algorithmId


def _exploring(
    catalog: Catalog, algorithm: Algorithm | None, spec: HyperparameterTuningSpec
) -> Catalog:
    """The catalog with the explored hyperparameters optional: the search supplies them."""
    if algorithm is None:
        return catalog
    explored = {d.hyperparameter_name for d in spec.hyperparameter_spec_list}
    hyperparameters = [
        hp.model_copy(update={"is_optional": True}) if hp.hyperparameter_name in explored else hp
        for hp in algorithm.hyperparameter_spec_list
    ]
    relaxed = algorithm.model_copy(update={"hyperparameter_spec_list": hyperparameters})
    algorithms = tuple(
        relaxed if a.algorithm_id == algorithm.algorithm_id else a for a in catalog.algorithms
    )
    return dataclasses.replace(catalog, algorithms=algorithms)


def _check_dimension(
    prefix: str,
    dimension: TuningHyperparameterSpec,
    spec: HyperparameterTuningSpec,
    problems: SpecProblems,
) -> bool:
    """Add this dimension's problems; True when it is well formed (its size is computable)."""
    if dimension.hyperparameter_type_code not in RANGED:
        return _check_values(prefix, dimension, problems)
    if not _check_range(prefix, dimension, problems):
        return False
    grid = spec.tuning_strategy_name == TuningStrategy.GRID
    return _check_step(prefix, dimension, grid, problems)


def _check_bound(
    prefix: str, field: str, text: str | None, kind: HyperparameterType, problems: SpecProblems
) -> Decimal | None:
    where = f"{prefix}.{field}"
    if text is None or not text.strip():
        problems.add(where, "missing", f"{kind} hyperparameters need {field}")
        return None
    number = parse_number(text)
    if number is None:
        problems.add(where, "number", "must be a finite number")
        return None
    if kind == INT and parse_integer(text) is None:
        problems.add(where, "integer", "must be an integer")
        return None
    return number


def _check_range(prefix: str, dimension: TuningHyperparameterSpec, problems: SpecProblems) -> bool:
    kind = dimension.hyperparameter_type_code
    low = _check_bound(prefix, MIN, dimension.hyperparameter_min_value, kind, problems)
    high = _check_bound(prefix, MAX, dimension.hyperparameter_max_value, kind, problems)
    if low is None or high is None:
        return False
    if low > high:
        problems.add(
            f"{prefix}.{MIN}",
            "range",
            f"{dimension.hyperparameter_min_value} is above the max "
            f"{dimension.hyperparameter_max_value}",
        )
        return False
    return True


def _check_step(
    prefix: str, dimension: TuningHyperparameterSpec, grid: bool, problems: SpecProblems
) -> bool:
    where, text, kind = (
        f"{prefix}.{STEP}",
        dimension.hyperparameter_step,
        dimension.hyperparameter_type_code,
    )
    if text is None or not text.strip():
        if grid:
            problems.add(where, "grid_step", f"GRID needs a step for {kind} hyperparameters")
        return not grid
    step = parse_number(text)
    if step is None:
        problems.add(where, "number", "must be a finite number")
        return False
    if kind == INT and parse_integer(text) is None:
        problems.add(where, "integer", "must be an integer")
        return False
    if step <= 0:
        problems.add(where, "positive", "must be above 0")
        return False
    low, high, _ = _bounds(dimension)
    if grid and not _step_count(low, high, step)[1]:
        problems.add(
            where,
            "grid_step",
            f"{text} does not divide the range {dimension.hyperparameter_min_value} to "
            f"{dimension.hyperparameter_max_value} into whole steps",
        )
        return False
    return True


def _check_values(
    prefix: str, dimension: TuningHyperparameterSpec, problems: SpecProblems
) -> bool:
    where, kind = f"{prefix}.{VALUES}", dimension.hyperparameter_type_code
    values = specified_values(dimension.hyperparameter_specified_values)
    if not values:
        problems.add(where, "values", f"{kind} hyperparameters need comma-separated values")
        return False
    if "" in values:
        problems.add(where, "values", "must not hold an empty value")
        return False
    keys: list[object] = list(values)
    if kind == DISCRETE:
        numbers = [parse_number(value) for value in values]
        if None in numbers:
            problems.add(where, "number", "discrete values must be finite numbers")
            return False
        keys = list(numbers)
    if len(set(keys)) != len(keys):
        problems.add(where, "values", "must not repeat a value")
        return False
    return True


def _check_names(spec: HyperparameterTuningSpec, problems: SpecProblems) -> None:
    seen: set[str] = set()
    for index, dimension in enumerate(spec.hyperparameter_spec_list):
        name = dimension.hyperparameter_name
        if name in seen:
            problems.add(
                f"hyperparameterSpecList.{index}.hyperparameterName",
                "duplicate",
                f"{name} is explored twice",
            )
        seen.add(name)
    for index, parameter in enumerate(spec.hyperparameter_list):
        if parameter.parameter_name in seen:
            problems.add(
                f"hyperparameterList.{index}.parameterName",
                "duplicate",
                f"{parameter.parameter_name} is both fixed and in hyperparameterSpecList",
            )


def _check_grid_size(
    dimensions: Sequence[TuningHyperparameterSpec], problems: SpecProblems
) -> None:
    size = search_space_size(dimensions)
    if size is not None and size > MAX_GRID_POINTS:
        problems.add(
            "hyperparameterSpecList",
            "grid_size",
            f"the grid has {size} points; at most {MAX_GRID_POINTS}",
        )


def _check_against_algorithm(
    index: int,
    dimension: TuningHyperparameterSpec,
    algorithm: Algorithm,
    problems: SpecProblems,
) -> None:
    prefix, name = f"hyperparameterSpecList.{index}", dimension.hyperparameter_name
    known = {hp.hyperparameter_name: hp for hp in algorithm.hyperparameter_spec_list}
    hp = known.get(name)
    if hp is None:
        problems.add(
            f"{prefix}.hyperparameterName",
            "unknown",
            f"{algorithm.algorithm_name} has no hyperparameter {name}; "
            f"known: {', '.join(sorted(known))}",
        )
        return
    kind = dimension.hyperparameter_type_code
    if kind not in COMPATIBLE_TYPES[hp.hyperparameter_type_code]:
        problems.add(
            f"{prefix}.hyperparameterTypeCode",
            "type",
            f"{name} is {hp.hyperparameter_type_code} in {algorithm.algorithm_name}; "
            f"use {' or '.join(sorted(COMPATIBLE_TYPES[hp.hyperparameter_type_code]))}",
        )
        return
    for field, value in _candidates(dimension):
        message = check_hyperparameter_value(hp, value)
        if message:
            problems.add(f"{prefix}.{field}", "hyperparameter_spec", f"{name} {message}")


def _candidates(dimension: TuningHyperparameterSpec) -> list[tuple[str, str]]:
    """The values whose fit to the algorithm's spec bounds the whole dimension's."""
    if dimension.hyperparameter_type_code in RANGED:
        return [
            (MIN, dimension.hyperparameter_min_value or ""),
            (MAX, dimension.hyperparameter_max_value or ""),
        ]
    return [
        (VALUES, value) for value in specified_values(dimension.hyperparameter_specified_values)
    ]


def _check_metrics(
    spec: HyperparameterTuningSpec, algorithm: Algorithm | None, problems: SpecProblems
) -> None:
    names: set[str] = set()
    for index, metric in enumerate(spec.metric_list):
        if metric.name in names:
            problems.add(f"metricList.{index}.name", "duplicate", f"{metric.name} is listed twice")
        names.add(metric.name)
    if algorithm is not None:
        names |= {metric.metric_name for metric in algorithm.algorithm_metric_list}
    objective = spec.objective_metric.name
    if names and objective not in names:
        problems.add(
            "objectiveMetric.name",
            "unknown_metric",
            f"{objective} is not collected; known: {', '.join(sorted(names))}",
        )
    try:
        groups = re.compile(spec.metric_regex).groups
    except re.error as exc:
        problems.add("metricRegex", "regex", f"does not compile: {exc}")
    else:
        if groups < 2:
            problems.add("metricRegex", "regex", "needs two groups: the name, then the value")


def _check_budget(spec: HyperparameterTuningSpec, problems: SpecProblems) -> None:
    if spec.max_failed_trial_count > spec.max_trial_count:
        problems.add(
            "maxFailedTrialCount", "le", f"at most maxTrialCount ({spec.max_trial_count})"
        )
    if spec.parallel_trial_count > spec.max_trial_count:
        problems.add("parallelTrialCount", "le", f"at most maxTrialCount ({spec.max_trial_count})")
    if spec.instance_count % spec.parallel_trial_count:
        problems.add(
            "instanceCount",
            "multiple",
            f"must be nodes per trial x parallelTrialCount ({spec.parallel_trial_count})",
        )
    elif spec.nodes_per_trial > MAX_INSTANCE_COUNT:
        problems.add(
            "instanceCount",
            "le",
            f"at most {MAX_INSTANCE_COUNT} nodes per trial x parallelTrialCount",
        )
    if spec.objective_goal is not None and not math.isfinite(spec.objective_goal):
        problems.add("objectiveGoal", "finite", "must be a finite number")
