"""``openmaker.job``: the helper a training's own code imports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from openmaker import job

# the default metrics regex of a Katib-style collector
KATIB = re.compile(r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)")


@pytest.fixture(autouse=True)
def clean_job_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import os

    for name in list(os.environ):
        if name.startswith("EM_"):
            monkeypatch.delenv(name)
    job.bind()
    yield
    job.bind()


@pytest.fixture
def checkpoint_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "checkpoints"
    monkeypatch.setenv("EM_CHECKPOINT_DIR", str(path))
    return path


# ------------------------------------------------------------------------------ report


def test_report_prints_one_katib_readable_line(capsys: pytest.CaptureFixture[str]) -> None:
    job.report(3, loss=0.25, accuracy=0.91, lr=1e-05)
    out = capsys.readouterr().out
    assert out == "step=3 loss=0.25 accuracy=0.91 lr=1e-05\n"
    parsed = {m.group(1): float(m.group(2)) for m in KATIB.finditer(out)}
    assert parsed == {"step": 3, "loss": 0.25, "accuracy": 0.91, "lr": 1e-05}


def test_report_accepts_numeric_like_values(capsys: pytest.CaptureFixture[str]) -> None:
    job.report(0, count=7)
    assert capsys.readouterr().out == "step=0 count=7.0\n"


def test_report_appends_json_lines_to_the_metrics_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics_file = tmp_path / "out" / "metrics.jsonl"
    monkeypatch.setenv("EM_METRICS_FILE", str(metrics_file))
    job.report(1, loss=0.5)
    job.report(2, loss=float("nan"), accuracy=0.75)
    records = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert records[0]["metrics"] == {"loss": 0.5}
    assert records[1]["metrics"] == {"loss": None, "accuracy": 0.75}
    assert isinstance(records[0]["timestamp"], float)
    assert capsys.readouterr().out.splitlines() == [
        "step=1 loss=0.5",
        "step=2 loss=nan accuracy=0.75",
    ]


def test_report_without_metrics_file_writes_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    job.report(1, loss=0.5)
    assert list(tmp_path.iterdir()) == []


def test_report_refuses_bad_input() -> None:
    with pytest.raises(TypeError, match="step must be an int"):
        job.report(1.5, loss=0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a number"):
        job.report(1, loss="high")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="metric name"):
        job.report(1, **{"val loss": 0.1})


# -------------------------------------------------------------------------------- save


def test_save_numbers_checkpoints_and_writes_latest(checkpoint_dir: Path) -> None:
    first = job.save()
    second = job.save()
    assert first == str(checkpoint_dir / "0001")
    assert second == str(checkpoint_dir / "0002")
    assert Path(second).is_dir()
    assert (checkpoint_dir / "latest").read_text().strip() == "0002"


def test_save_with_a_number_or_name(checkpoint_dir: Path) -> None:
    assert job.save(7) == str(checkpoint_dir / "0007")
    assert job.save() == str(checkpoint_dir / "0008")  # continues after the highest number
    assert job.save("12") == str(checkpoint_dir / "0012")
    assert job.save("best") == str(checkpoint_dir / "best")
    assert (checkpoint_dir / "latest").read_text().strip() == "best"
    assert job.save() == str(checkpoint_dir / "0013")


@pytest.mark.parametrize("bad", ["", "..", "a/b", "latest", -1])
def test_save_refuses_bad_names(checkpoint_dir: Path, bad: str | int) -> None:
    with pytest.raises(ValueError):
        job.save(bad)


def test_save_calls_save_fn_then_the_bound_function(checkpoint_dir: Path) -> None:
    calls: list[str] = []

    def bound(path: str) -> None:
        calls.append("bound:" + Path(path).name)
        (Path(path) / "weights.bin").write_bytes(b"w")

    job.bind(save=bound)
    job.save()
    job.save(save_fn=lambda path: calls.append("given:" + Path(path).name))
    assert calls == ["bound:0001", "given:0002"]
    assert (checkpoint_dir / "0001" / "weights.bin").read_bytes() == b"w"


def test_failed_save_does_not_become_latest(checkpoint_dir: Path) -> None:
    job.save()

    def broken(path: str) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        job.save(save_fn=broken)
    assert (checkpoint_dir / "latest").read_text().strip() == "0001"


def test_save_needs_the_checkpoint_dir() -> None:
    with pytest.raises(job.JobEnvironmentError, match="EM_CHECKPOINT_DIR"):
        job.save()


# -------------------------------------------------------------------------------- load


def test_load_prefers_the_input_dir_and_calls_the_bound_function(
    tmp_path: Path, checkpoint_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    input_dir = tmp_path / "input"
    (input_dir / "0003").mkdir(parents=True)
    (input_dir / "0010").mkdir()
    monkeypatch.setenv("EM_CHECKPOINT_INPUT_DIR", str(input_dir))
    job.save()  # a checkpoint in the output folder too
    loaded: list[str] = []
    job.bind(load=loaded.append)
    assert job.load() == str(input_dir / "0010")  # highest number, no latest file
    assert loaded == [str(input_dir / "0010")]


def test_load_follows_the_latest_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    input_dir = tmp_path / "input"
    (input_dir / "0002").mkdir(parents=True)
    (input_dir / "best").mkdir()
    (input_dir / "latest").write_text("best\n")
    monkeypatch.setenv("EM_CHECKPOINT_INPUT_DIR", str(input_dir))
    assert job.load() == str(input_dir / "best")


def test_load_falls_back_to_the_checkpoint_dir(
    tmp_path: Path, checkpoint_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EM_CHECKPOINT_INPUT_DIR", str(tmp_path / "empty-input"))
    (tmp_path / "empty-input").mkdir()
    assert job.load() is None  # nothing saved anywhere: a fresh start
    job.save()
    saved = job.save()
    assert job.load() == saved


def test_load_with_only_the_checkpoint_dir(checkpoint_dir: Path) -> None:
    assert job.load() is None
    job.save(4)
    assert job.load() == str(checkpoint_dir / "0004")


def test_load_takes_a_flat_input_folder_as_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    (input_dir / "model.pt").write_bytes(b"x")
    monkeypatch.setenv("EM_CHECKPOINT_INPUT_DIR", str(input_dir))
    assert job.load() == str(input_dir)


def test_load_a_named_checkpoint(
    tmp_path: Path, checkpoint_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    input_dir = tmp_path / "input"
    (input_dir / "0001").mkdir(parents=True)
    monkeypatch.setenv("EM_CHECKPOINT_INPUT_DIR", str(input_dir))
    job.save("best")
    assert job.load(1) == str(input_dir / "0001")
    assert job.load("best") == str(checkpoint_dir / "best")  # found in the fallback
    with pytest.raises(FileNotFoundError, match="0009"):
        job.load("9")


def test_load_needs_a_checkpoint_variable() -> None:
    with pytest.raises(job.JobEnvironmentError) as error:
        job.load()
    assert "EM_CHECKPOINT_INPUT_DIR" in str(error.value)
    assert "EM_CHECKPOINT_DIR" in str(error.value)


# ------------------------------------------------------------------------ job contract


def test_hyperparameters_are_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EM_HPS", json.dumps({"epochs": "10", "lr": 0.01, "flag": True}))
    assert job.hyperparameters() == {"epochs": "10", "lr": "0.01", "flag": "true"}


def test_hyperparameters_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(job.JobEnvironmentError, match="EM_HPS is not set"):
        job.hyperparameters()
    monkeypatch.setenv("EM_HPS", "{not json")
    with pytest.raises(job.JobEnvironmentError, match="EM_HPS is not valid JSON"):
        job.hyperparameters()
    monkeypatch.setenv("EM_HPS", "[1, 2]")
    with pytest.raises(job.JobEnvironmentError, match="JSON object"):
        job.hyperparameters()


def test_dataset_from_its_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EM_DATASET_TRAIN", str(tmp_path / "train"))
    monkeypatch.setenv("EM_DATASET_TEST_SET", str(tmp_path / "test"))
    assert job.dataset("train") == tmp_path / "train"
    assert job.dataset("test-set") == tmp_path / "test"
    assert job.dataset("test.set") == tmp_path / "test"


def test_dataset_from_the_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listed = [{"datasetName": "extra", "dataUri": "obs://x", "path": str(tmp_path / "extra")}]
    monkeypatch.setenv("EM_DATASETS", json.dumps(listed))
    assert job.dataset("extra") == tmp_path / "extra"


def test_missing_dataset_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EM_DATASET_TRAIN", str(tmp_path))
    with pytest.raises(job.JobEnvironmentError) as error:
        job.dataset("validation")
    assert "EM_DATASET_VALIDATION" in str(error.value)
    assert "train" in str(error.value)


def test_model_dir_is_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(job.JobEnvironmentError, match="EM_MODEL_DIR"):
        job.model_dir()
    monkeypatch.setenv("EM_MODEL_DIR", str(tmp_path / "model"))
    assert job.model_dir() == tmp_path / "model"
    assert (tmp_path / "model").is_dir()


def test_a_plain_script_can_use_it(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(
        "from openmaker import job\n"
        "hps = job.hyperparameters()\n"
        "for step in range(int(hps['epochs'])):\n"
        "    job.report(step, loss=1.0 / (step + 1))\n"
        "    job.save(step, save_fn=lambda p: open(p + '/state', 'w').write('s'))\n"
        "print(job.load())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EM_")}
    env.update(
        EM_HPS='{"epochs": 2}',
        EM_CHECKPOINT_DIR=str(tmp_path / "ckpt"),
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "step=0 loss=1.0",
        "step=1 loss=0.5",
        str(tmp_path / "ckpt" / "0001"),
    ]
