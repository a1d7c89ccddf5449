"""The built-in ``sklearn_classifier`` algorithm, run as the platform runs it: a subprocess."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn", reason="scikit-learn runs the built-in algorithm")
joblib = pytest.importorskip("joblib")
np = pytest.importorskip("numpy")

REPO = Path(__file__).resolve().parents[2]
MODULE = "runners.algorithms.sklearn_classifier"
STEP_LINE = re.compile(r"^step=(\d+) accuracy=([0-9.]+) f1_macro=([0-9.]+)$", re.MULTILINE)


def write_blobs(
    path: Path,
    rows: int = 200,
    *,
    seed: int = 0,
    header: tuple[str, ...] = ("x1", "x2", "label"),
    labels: tuple[str, str] = ("0", "1"),
    categorical: bool = False,
) -> Path:
    """Two well separated Gaussian blobs, one class each."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*header[:2], *(["color"] if categorical else []), header[2]])
        for i in range(rows):
            cls = i % 2
            x1, x2 = rng.normal(loc=(0.0, 0.0) if cls == 0 else (5.0, 5.0), scale=1.0)
            extra = [("red", "blue")[cls] if i % 7 else "green"] if categorical else []
            writer.writerow([f"{x1:.5f}", f"{x2:.5f}", *extra, labels[cls]])
    return path


def run_algorithm(
    tmp_path: Path, *args: str, datasets: dict[str, Path] | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EM_")}
    base.update(
        EM_MODEL_DIR=str(tmp_path / "model"),
        EM_CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
        EM_TENSORBOARD_LOG_DIR=str(tmp_path / "tensorboard"),
        PYTHONPATH=str(REPO),
    )
    for name, path in (datasets or {}).items():
        base[f"EM_DATASET_{name.upper()}"] = str(path)
    base.update(env)
    return subprocess.run(
        [sys.executable, "-m", MODULE, *args],
        cwd=REPO,
        env=base,
        capture_output=True,
        text=True,
        timeout=240,
    )


def assert_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_trains_on_a_csv_file_and_writes_the_model(tmp_path: Path) -> None:
    train = write_blobs(tmp_path / "data" / "train.csv")
    result = run_algorithm(tmp_path, "--n_estimators", "10", datasets={"train": train})
    assert result.returncode == 0, result.stderr

    steps = STEP_LINE.findall(result.stdout)
    assert [int(s[0]) for s in steps] == [1, 2, 3, 4, 5]
    assert float(steps[-1][1]) > 0.8
    assert float(steps[-1][2]) > 0.8

    model_dir = tmp_path / "model"
    model = joblib.load(model_dir / "model.joblib")
    predicted = model.predict(np.array([[0.0, 0.0], [5.0, 5.0]]))
    assert predicted.tolist() == [0, 1]
    assert len(model.estimators_) == 10

    description = json.loads((model_dir / "model.json").read_text())
    assert description["framework"] == "SKLEARN"
    assert description["featureNames"] == ["x1", "x2"]
    assert description["classes"] == [0, 1]
    assert description["target"] == "label"

    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(float(steps[-1][1]), abs=1e-6)
    assert metrics["validationRows"] == 40
    assert metrics["trainRows"] == 160
    assert len(metrics["history"]) == 5


def test_uses_the_validation_dataset_when_given(tmp_path: Path) -> None:
    train = write_blobs(tmp_path / "train" / "part.csv", rows=200, seed=1)
    validation = write_blobs(tmp_path / "validation" / "val.csv", rows=60, seed=2)
    result = run_algorithm(
        tmp_path, "--n_estimators", "5", datasets={"train": train, "validation": validation}
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["validationRows"] == 60
    assert metrics["trainRows"] == 200
    assert metrics["validation"] == "validation dataset"
    assert metrics["accuracy"] > 0.8


def test_reads_a_folder_of_csv_files_with_the_target_last(tmp_path: Path) -> None:
    folder = tmp_path / "train"
    header = ("a", "b", "species")
    write_blobs(folder / "part-1.csv", rows=100, seed=3, header=header, labels=("cat", "dog"))
    write_blobs(
        folder / "nested" / "part-2.csv", rows=100, seed=4, header=header, labels=("cat", "dog")
    )
    (folder / "README.txt").write_text("not data")
    result = run_algorithm(
        tmp_path,
        "--n_estimators",
        "3",
        "--max_depth",
        "4",
        "--criterion",
        "entropy",
        "--unknown-flag",
        "x",
        datasets={"train": folder},
    )
    assert result.returncode == 0, result.stderr
    assert "ignoring unknown arguments: --unknown-flag x" in result.stderr
    assert len(STEP_LINE.findall(result.stdout)) == 3  # fewer trees than progress steps
    description = json.loads((tmp_path / "model" / "model.json").read_text())
    assert description["target"] == "species"
    assert description["classes"] == ["cat", "dog"]
    assert description["hyperparameters"]["max_depth"] == 4
    assert description["hyperparameters"]["criterion"] == "entropy"
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["trainRows"] + metrics["validationRows"] == 200


def test_hyperparameters_fall_back_to_the_environment(tmp_path: Path) -> None:
    train = write_blobs(tmp_path / "train.csv", rows=100)
    result = run_algorithm(
        tmp_path,
        datasets={"train": train},
        EM_HP_N_ESTIMATORS="4",
        EM_HP_VALIDATION_FRACTION="0.5",
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["validationRows"] == 50
    assert metrics["history"][-1]["trees"] == 4


def test_one_hot_encodes_non_numeric_features(tmp_path: Path) -> None:
    train = write_blobs(tmp_path / "train.csv", categorical=True)
    result = run_algorithm(tmp_path, "--n_estimators", "5", datasets={"train": train})
    assert result.returncode == 0, result.stderr
    description = json.loads((tmp_path / "model" / "model.json").read_text())
    assert description["estimator"] == "Pipeline"
    assert description["inputColumns"] == ["x1", "x2", "color"]
    assert description["categoricalColumns"] == ["color"]
    assert {"color=red", "color=blue", "color=green"} <= set(description["featureNames"])
    model = joblib.load(tmp_path / "model" / "model.joblib")
    rows = np.array([[0.0, 0.0, "red"], [5.0, 5.0, "blue"], [5.0, 5.0, "unseen"]], dtype=object)
    assert model.predict(rows).tolist() == [0, 1, 1]


def test_metrics_file_gets_a_json_line_per_step(tmp_path: Path) -> None:
    train = write_blobs(tmp_path / "train.csv", rows=100)
    metrics_file = tmp_path / "metrics.jsonl"
    result = run_algorithm(
        tmp_path,
        "--n_estimators",
        "5",
        datasets={"train": train},
        EM_METRICS_FILE=str(metrics_file),
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert set(records[0]["metrics"]) == {"accuracy", "f1_macro"}


def test_missing_train_dataset_is_an_error(tmp_path: Path) -> None:
    result = run_algorithm(tmp_path)
    assert_error(result, "EM_DATASET_TRAIN")


def test_train_path_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    result = run_algorithm(tmp_path, datasets={"train": tmp_path / "nowhere"})
    assert_error(result, "does not exist")


def test_folder_without_csv_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "data.parquet").write_bytes(b"PAR1")
    result = run_algorithm(tmp_path, datasets={"train": tmp_path / "train"})
    assert_error(result, "no .csv file")


def test_empty_csv_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "train.csv"
    empty.write_text("")
    assert_error(run_algorithm(tmp_path, datasets={"train": empty}), "empty")
    empty.write_text("x1,x2,label\n")
    assert_error(run_algorithm(tmp_path, datasets={"train": empty}), "no rows")


def test_single_class_is_an_error(tmp_path: Path) -> None:
    train = write_blobs(tmp_path / "train.csv", labels=("same", "same"))
    result = run_algorithm(tmp_path, datasets={"train": train})
    assert_error(result, "single class", "same")


def test_ragged_rows_are_an_error(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_text("x1,x2,label\n1,2,0\n3,1\n")
    assert_error(run_algorithm(tmp_path, datasets={"train": train}), "train.csv:3")


def test_validation_without_a_train_column_is_an_error(tmp_path: Path) -> None:
    train = write_blobs(tmp_path / "train.csv")
    validation = write_blobs(tmp_path / "val.csv", header=("x1", "other", "label"))
    result = run_algorithm(tmp_path, datasets={"train": train, "validation": validation})
    assert_error(result, "validation dataset lacks the columns ['x2']")


def test_bad_hyperparameter_is_an_error(tmp_path: Path) -> None:
    train = write_blobs(tmp_path / "train.csv", rows=20)
    result = run_algorithm(tmp_path, "--n_estimators", "0", datasets={"train": train})
    assert result.returncode == 2
    assert_error(result, "--n_estimators")
    result = run_algorithm(tmp_path, "--criterion", "mse", datasets={"train": train})
    assert_error(result, "--criterion")
