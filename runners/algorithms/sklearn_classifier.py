"""Built-in algorithm ``sklearn_classifier``: a scikit-learn random forest on CSV data.

Run as ``python -m runners.algorithms.sklearn_classifier --n_estimators 100 ...`` inside a
training. Hyperparameters come from the command line, else from ``EM_HP_<NAME>``, else
the catalog defaults; unknown arguments are ignored with a warning.

Data: ``EM_DATASET_TRAIN`` (required) and ``EM_DATASET_VALIDATION`` (optional) are a CSV
file or a folder of ``.csv`` files with a header row. The target is the ``label`` column,
or else the last column. Numeric feature columns are used as they are (empty cells are
missing values); non-numeric ones are one-hot encoded. Without a validation dataset,
``validation_fraction`` of train is held out (stratified when possible).

The forest is grown with ``warm_start`` in up to five steps; after each the validation
metrics are printed as ``step=<n> accuracy=<v> f1_macro=<v>``. Into ``EM_MODEL_DIR`` go
``model.joblib`` (the fitted estimator: the forest, or a Pipeline of one-hot encoding and
forest when there are non-numeric columns), ``model.json`` (columns, classes, framework)
and ``metrics.json``.

Bad input ends the run with exit status 1 (2 for bad arguments) and one ``error: ...``
line on stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from openmaker import job

NAME = "sklearn_classifier"
PROGRESS_STEPS = 5
MAX_CATEGORIES = 256  # distinct values a non-numeric column may have to be one-hot encoded
CRITERIA = ("gini", "entropy", "log_loss")
MISSING = {"", "na", "nan", "null", "none"}


class InputError(Exception):
    """Bad input: reported as one line on stderr, exit status 1."""


class UsageError(InputError):
    """Bad arguments: reported as one line on stderr, exit status 2."""


# ------------------------------------------------------------------------- arguments


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        number = float(text)  # "10.0" from a tuner that writes every number as a float
        if not number.is_integer():
            raise
        return int(number)


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise ValueError(text)
    return value


def _non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise ValueError(text)
    return value


def _optional_depth(text: str) -> int | None:
    if text.strip().lower() in MISSING:
        return None
    return _positive_int(text)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise ValueError(text)
    return value


# argparse names the type function in its message ("invalid _fraction value")
_positive_int.__name__ = "positive integer"
_non_negative_int.__name__ = "non-negative integer"
_optional_depth.__name__ = "positive integer (or none)"
_fraction.__name__ = "fraction between 0 and 1"


def _default(name: str, fallback: str) -> str:
    return os.environ.get(f"EM_HP_{name.upper()}", fallback)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Hyperparameters from ``argv`` (else ``EM_HP_*``, else the catalog defaults)."""
    parser = _Parser(
        prog=f"python -m runners.algorithms.{NAME}",
        description=__doc__,
        allow_abbrev=False,
    )
    add = parser.add_argument
    add(
        "--n_estimators",
        "--n-estimators",
        type=_positive_int,
        default=_default("n_estimators", "100"),
        help="number of trees (default 100)",
    )
    add(
        "--max_depth",
        "--max-depth",
        type=_optional_depth,
        default=_default("max_depth", "none"),
        help="maximum tree depth (default unlimited)",
    )
    add("--criterion", choices=CRITERIA, default=_default("criterion", "gini"))
    add(
        "--validation_fraction",
        "--validation-fraction",
        type=_fraction,
        default=_default("validation_fraction", "0.2"),
        help="share of train held out when there is no validation dataset (default 0.2)",
    )
    add(
        "--random_state",
        "--random-state",
        type=_non_negative_int,
        default=_default("random_state", "0"),
        help="seed (default 0)",
    )
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"warning: ignoring unknown arguments: {' '.join(unknown)}", file=sys.stderr)
    return args


# ------------------------------------------------------------------------------ data


@dataclass
class Table:
    """The rows of one dataset (all its CSV files), as strings."""

    source: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)


def _dataset_path(name: str, *, required: bool) -> Path | None:
    try:
        path = job.dataset(name)  # EM_DATASET_<NAME>, or its entry in EM_DATASETS
    except job.JobEnvironmentError as exc:
        if required:
            raise InputError(f"no {name} dataset: {exc}") from None
        return None
    if not path.exists():
        raise InputError(f"{name} dataset {path} does not exist")
    return path


def _csv_files(name: str, path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and p.suffix.lower() == ".csv" and not p.name.startswith(".")
    )
    if not files:
        raise InputError(f"{name} dataset {path} holds no .csv file")
    return files


def _read_csv(file: Path, table: Table | None, name: str) -> Table:
    try:
        with file.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header: list[str] | None = None
            rows: list[list[str]] = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                cells = [cell.strip() for cell in row]
                if header is None:
                    header = cells
                    continue
                if len(cells) != len(header):
                    raise InputError(
                        f"{file}:{reader.line_num}: {len(cells)} columns where the header "
                        f"has {len(header)}"
                    )
                rows.append(cells)
    except UnicodeDecodeError:
        raise InputError(f"{file} is not a UTF-8 text CSV file") from None
    except csv.Error as exc:
        raise InputError(f"{file} is not a valid CSV file: {exc}") from None
    if header is None:
        raise InputError(f"{name} dataset file {file} is empty")
    if table is None:
        return Table(source=str(file), header=header, rows=rows)
    if header != table.header:
        raise InputError(f"{file} has the columns {header} but {table.source} has {table.header}")
    table.rows.extend(rows)
    return table


def load_table(name: str, path: Path) -> Table:
    """Every row of the CSV file ``path`` or of the ``.csv`` files under the folder."""
    table: Table | None = None
    for file in _csv_files(name, path):
        table = _read_csv(file, table, name)
    assert table is not None
    if len(table.header) < 2:
        raise InputError(f"{name} dataset needs a target column and at least one feature")
    if len(set(table.header)) != len(table.header) or "" in table.header:
        raise InputError(f"{name} dataset has empty or repeated column names: {table.header}")
    if not table.rows:
        raise InputError(f"{name} dataset has a header but no rows")
    return table


def _target_column(header: list[str]) -> str:
    if "label" in header:
        return "label"
    for column in header:
        if column.lower() == "label":
            return column
    return header[-1]


def _number(text: str) -> float | None:
    """The float in a cell; NaN for a missing value; None when it is not a number."""
    if text.lower() in MISSING:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        return None
    return value


@dataclass
class Features:
    """How the feature columns are read: which are numeric, which are one-hot encoded."""

    target: str
    columns: list[str]
    categorical: list[str]

    @classmethod
    def of(cls, table: Table) -> Features:
        target = _target_column(table.header)
        columns = [c for c in table.header if c != target]
        categorical: list[str] = []
        for column in columns:
            index = table.header.index(column)
            if any(_number(row[index]) is None for row in table.rows):
                distinct = len({row[index] for row in table.rows})
                if distinct > MAX_CATEGORIES:
                    raise InputError(
                        f"feature column {column!r} is not numeric and has {distinct} distinct "
                        f"values (at most {MAX_CATEGORIES} are one-hot encoded); drop it or "
                        f"encode it as numbers"
                    )
                categorical.append(column)
        return cls(target=target, columns=columns, categorical=categorical)

    def matrix(self, table: Table, name: str) -> tuple[np.ndarray, list[str]]:
        """The feature matrix (float, or object when one-hot columns remain) and labels."""
        missing = [c for c in [*self.columns, self.target] if c not in table.header]
        if missing:
            raise InputError(f"{name} dataset lacks the columns {missing} that train has")
        dtype: type = object if self.categorical else float
        x: np.ndarray = np.empty((len(table.rows), len(self.columns)), dtype=dtype)
        for j, column in enumerate(self.columns):
            index = table.header.index(column)
            if column in self.categorical:
                x[:, j] = [row[index] for row in table.rows]
                continue
            for i, row in enumerate(table.rows):
                value = _number(row[index])
                if value is None or math.isinf(value):
                    raise InputError(
                        f"{name} dataset: column {column!r} holds {row[index]!r} where train "
                        f"has numbers"
                    )
                x[i, j] = value
        target = table.header.index(self.target)
        labels = [row[target] for row in table.rows]
        if any(label == "" for label in labels):
            raise InputError(f"{name} dataset has rows with an empty {self.target!r} value")
        return x, labels


def _labels(*groups: list[str]) -> list[np.ndarray]:
    """The label columns, as integers when every label is one, else as strings."""
    try:
        return [np.array([int(v) for v in group], dtype=np.int64) for group in groups]
    except ValueError:
        return [np.array(group, dtype=str) for group in groups]


# -------------------------------------------------------------------------- training


def _tree_counts(n_estimators: int) -> list[int]:
    steps = min(PROGRESS_STEPS, n_estimators)
    return sorted({round(n_estimators * i / steps) for i in range(1, steps + 1)})


def _report(step: int, **metrics: float) -> None:
    print(" ".join([f"step={step}", *(f"{k}={v:.6f}" for k, v in metrics.items())]), flush=True)
    metrics_file = os.environ.get("EM_METRICS_FILE")
    if metrics_file:
        record = {"step": step, "timestamp": time.time(), "metrics": metrics}
        with open(metrics_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def _split(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    if len(y) < 2:
        raise InputError(
            f"train dataset has {len(y)} row; at least 2 are needed to hold out validation "
            f"rows (or give a validation dataset)"
        )
    try:
        parts = train_test_split(x, y, test_size=fraction, random_state=seed, stratify=y)
    except ValueError:  # a class too small to stratify: split at random
        parts = train_test_split(x, y, test_size=fraction, random_state=seed)
    x_train, x_val, y_train, y_val = parts
    if len(np.unique(y_train)) < 2:
        raise InputError(
            "after holding out validation rows the training part has a single class; give "
            "more rows, a smaller validation_fraction or a validation dataset"
        )
    return x_train, x_val, y_train, y_val


@dataclass
class Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    features: Features
    validation_source: str


def prepare(args: argparse.Namespace) -> Data:
    """Read, check and split the datasets."""
    train_path = _dataset_path("train", required=True)
    assert train_path is not None
    validation_path = _dataset_path("validation", required=False)
    train = load_table("train", train_path)
    features = Features.of(train)
    x, train_labels = features.matrix(train, "train")
    if validation_path is None:
        (y,) = _labels(train_labels)
        if len(np.unique(y)) < 2:
            raise InputError(
                f"train dataset has a single class ({y[0]!r} in column {features.target!r}); "
                f"a classifier needs at least two"
            )
        x_train, x_val, y_train, y_val = _split(x, y, args.validation_fraction, args.random_state)
        source = f"{args.validation_fraction:g} of train"
    else:
        x_val, val_labels = features.matrix(
            load_table("validation", validation_path), "validation"
        )
        y_train, y_val = _labels(train_labels, val_labels)
        x_train = x
        if len(np.unique(y_train)) < 2:
            raise InputError(
                f"train dataset has a single class ({y_train[0]!r} in column "
                f"{features.target!r}); a classifier needs at least two"
            )
        source = "validation dataset"
    return Data(x_train, y_train, x_val, y_val, features, source)


def _encoder(features: Features) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    indices = [features.columns.index(c) for c in features.categorical]
    return ColumnTransformer(
        [("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False), indices)],
        remainder="passthrough",
    )


def _feature_names(features: Features, encoder: Any) -> list[str]:
    if encoder is None:
        return list(features.columns)
    names: list[str] = []
    for column, categories in zip(
        features.categorical, encoder.named_transformers_["onehot"].categories_, strict=True
    ):
        names.extend(f"{column}={category}" for category in categories)
    names.extend(c for c in features.columns if c not in features.categorical)
    return names


def train(args: argparse.Namespace, data: Data, model_dir: Path) -> dict[str, Any]:
    """Grow the forest step by step, print the metrics, write the model files."""
    import joblib
    import sklearn
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import Pipeline

    encoder = _encoder(data.features) if data.features.categorical else None
    x_train, x_val = data.x_train, data.x_val
    if encoder is not None:
        x_train = encoder.fit_transform(x_train).astype(float)
        x_val = encoder.transform(x_val).astype(float)
    forest = RandomForestClassifier(
        n_estimators=1,
        criterion=args.criterion,
        max_depth=args.max_depth,
        random_state=args.random_state,
        warm_start=True,
        n_jobs=-1,
    )
    history: list[dict[str, float]] = []
    for step, trees in enumerate(_tree_counts(args.n_estimators), start=1):
        forest.set_params(n_estimators=trees)
        forest.fit(x_train, data.y_train)
        predicted = forest.predict(x_val)
        accuracy = float(accuracy_score(data.y_val, predicted))
        f1_macro = float(f1_score(data.y_val, predicted, average="macro", zero_division=0))
        _report(step, accuracy=accuracy, f1_macro=f1_macro)
        history.append({"step": step, "trees": trees, "accuracy": accuracy, "f1_macro": f1_macro})

    model: Any = forest if encoder is None else Pipeline([("encode", encoder), ("forest", forest)])
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, model_dir / "model.joblib")
    hyperparameters = {
        "n_estimators": args.n_estimators,
        "max_depth": args.max_depth,
        "criterion": args.criterion,
        "validation_fraction": args.validation_fraction,
        "random_state": args.random_state,
    }
    description = {
        "framework": "SKLEARN",
        "frameworkVersion": sklearn.__version__,
        "algorithm": NAME,
        "estimator": type(model).__name__,
        "modelFile": "model.joblib",
        "target": data.features.target,
        "inputColumns": data.features.columns,
        "categoricalColumns": data.features.categorical,
        "featureNames": _feature_names(data.features, encoder),
        "classes": forest.classes_.tolist(),
        "hyperparameters": hyperparameters,
    }
    (model_dir / "model.json").write_text(json.dumps(description, indent=2) + "\n")
    metrics = {
        "accuracy": history[-1]["accuracy"],
        "f1_macro": history[-1]["f1_macro"],
        "trainRows": len(data.y_train),
        "validationRows": len(data.y_val),
        "validation": data.validation_source,
        "history": history,
    }
    (model_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        model_dir = os.environ.get("EM_MODEL_DIR")
        if not model_dir:
            raise InputError("environment variable EM_MODEL_DIR is not set")
        data = prepare(args)
        print(
            f"{NAME}: {len(data.y_train)} training rows, {len(data.y_val)} validation rows "
            f"({data.validation_source}), {len(data.features.columns)} feature columns, "
            f"{len(np.unique(data.y_train))} classes, target column {data.features.target!r}",
            flush=True,
        )
        metrics = train(args, data, Path(model_dir))
    except InputError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the data held
        print(f"error: {message}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    print(f"{NAME}: model written to {model_dir} (validation accuracy {metrics['accuracy']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
