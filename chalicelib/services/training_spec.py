"""Checks of a training specification against the catalog (shared by every training create)."""

from __future__ import annotations

from chalicelib.domain.catalog import (
    Algorithm,
    CoreType,
    GroupType,
    HyperparameterSpec,
    HyperparameterType,
)
from chalicelib.domain.training import TrainingSpec
from chalicelib.errors import NotFoundError, ValidationError
from chalicelib.services.catalog import IMAGE_GROUPS, Catalog


class SpecProblems:
    """Collects every problem so one response names them all."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, field: str, rule: str, message: str) -> None:
        self.items.append({"field": field, "rule": rule, "message": message})

    def raise_if_any(self) -> None:
        if self.items:
            summary = "; ".join(f"{i['field']}: {i['message']}" for i in self.items[:5])
            raise ValidationError(f"invalid request body: {summary}", details=self.items)


def validate_training_spec(
    spec: TrainingSpec, catalog: Catalog, group: GroupType = GroupType.TRAINING
) -> None:
    """Raise ``ValidationError`` naming each field whose reference or value the catalog refutes."""
    problems = SpecProblems()
    _check_fields_together(spec, problems)
    image = flavor = algorithm = None
    try:
        image = catalog.image(spec.image_id)
    except NotFoundError as exc:
        problems.add("imageId", "not_found", exc.message)
    try:
        flavor = catalog.flavor(spec.flavor_id)
    except NotFoundError as exc:
        problems.add("flavorId", "not_found", exc.message)
    if spec.algorithm_id:
        try:
            algorithm = catalog.algorithm(spec.algorithm_id)
        except NotFoundError as exc:
            problems.add("algorithmId", "not_found", exc.message)
    if image is not None and group not in IMAGE_GROUPS.get(image.image_type_code, frozenset()):
        problems.add("imageId", "image_type", f"image {image.image_name} is not for {group}")
    if flavor is not None and group not in flavor.group_type_list:
        problems.add("flavorId", "group_type", f"flavor {flavor.name} is not offered for {group}")
    if image is not None and flavor is not None and image.core_type_code != flavor.core_type_code:
        problems.add(
            "imageId",
            "core_type",
            f"{image.core_type_code} image {image.image_name} needs a "
            f"{image.core_type_code} flavor, not {flavor.name}",
        )
    if flavor is not None and flavor.core_type_code == CoreType.GPU and spec.use_torchrun:
        if spec.nproc_per_node > max(flavor.gpu_count, 1):
            problems.add(
                "nprocPerNode", "le", f"at most {flavor.gpu_count} on {flavor.name} (one per GPU)"
            )
    elif flavor is not None and spec.nproc_per_node > flavor.vcpus:
        problems.add("nprocPerNode", "le", f"at most {flavor.vcpus} on {flavor.name}")
    if algorithm is not None:
        _check_algorithm_inputs(spec, algorithm, problems)
    problems.raise_if_any()


def _check_fields_together(spec: TrainingSpec, problems: SpecProblems) -> None:
    own_code = spec.source_dir_uri is not None or spec.entry_point is not None
    if spec.algorithm_id and own_code:
        field = "sourceDirUri" if spec.source_dir_uri is not None else "entryPoint"
        problems.add(field, "exclusive", "give either algorithmId or sourceDirUri with entryPoint")
    if not spec.algorithm_id:
        for field, value in (
            ("sourceDirUri", spec.source_dir_uri),
            ("entryPoint", spec.entry_point),
        ):
            if not value:
                problems.add(
                    field,
                    "missing",
                    "own algorithms need sourceDirUri and entryPoint (or give algorithmId)",
                )
    if spec.nproc_per_node > 1 and not spec.use_torchrun:
        problems.add("nprocPerNode", "needs_torchrun", "above 1 needs useTorchrun")


def _check_algorithm_inputs(
    spec: TrainingSpec, algorithm: Algorithm, problems: SpecProblems
) -> None:
    specs = {s.hyperparameter_name: s for s in algorithm.hyperparameter_spec_list}
    for index, parameter in enumerate(spec.hyperparameter_list):
        field = f"hyperparameterList.{index}.parameterValue"
        hp = specs.get(parameter.parameter_name)
        if hp is None:
            problems.add(
                f"hyperparameterList.{index}.parameterName",
                "unknown",
                f"{algorithm.algorithm_name} has no hyperparameter {parameter.parameter_name}; "
                f"known: {', '.join(sorted(specs))}",
            )
            continue
        message = check_hyperparameter_value(hp, parameter.parameter_value)
        if message:
            problems.add(field, "hyperparameter_spec", f"{parameter.parameter_name} {message}")
    given = {p.parameter_name for p in spec.hyperparameter_list}
    for name, hp in specs.items():
        if not hp.is_optional and hp.default_value is None and name not in given:
            problems.add("hyperparameterList", "missing", f"{name} is required")
    names = {d.dataset_name for d in spec.dataset_list}
    for schema in algorithm.algorithm_dataset_schema:
        if schema.required and schema.dataset_name not in names:
            problems.add(
                "datasetList",
                "missing",
                f"{algorithm.algorithm_name} needs dataset {schema.dataset_name}",
            )


def check_hyperparameter_value(spec: HyperparameterSpec, value: str) -> str | None:
    """Why ``value`` breaks ``spec`` (type, range, allowed values), or None when it fits."""
    kind = spec.hyperparameter_type_code
    if kind in (HyperparameterType.CATEGORICAL, HyperparameterType.DISCRETE):
        allowed = [v.strip() for v in (spec.hyperparameter_specified_values or "").split(",")]
        if kind == HyperparameterType.DISCRETE:
            try:
                return (
                    None
                    if float(value) in {float(v) for v in allowed}
                    else (f"must be one of {', '.join(allowed)}")
                )
            except ValueError:
                return "must be a number"
        return None if value in allowed else f"must be one of {', '.join(allowed)}"
    try:
        number = int(value) if kind == HyperparameterType.INT else float(value)
    except ValueError:
        return "must be an integer" if kind == HyperparameterType.INT else "must be a number"
    low, high = spec.hyperparameter_min_value, spec.hyperparameter_max_value
    if low is not None and number < float(low):
        return f"must be >= {low}"
    if high is not None and number > float(high):
        return f"must be <= {high}"
    return None
