"""Helpers for code that runs *inside* an OpenMaker training (in the manner of NSML).

Standard library only, so it works in any training image and in plain scripts. Every
function reads the job contract the platform sets before the entry point starts
(``EM_HPS``, ``EM_DATASET_<NAME>``, ``EM_MODEL_DIR``, ``EM_CHECKPOINT_DIR``, ...), and
fails with a :class:`JobEnvironmentError` naming the variable when one it needs is missing.

Example::

    from openmaker import job

    hps = job.hyperparameters()                    # {"epochs": "10", "lr": "0.01"}
    train_dir = job.dataset("train")               # Path of the downloaded dataset
    job.bind(save=lambda path: torch.save(model.state_dict(), f"{path}/model.pt"),
             load=lambda path: model.load_state_dict(torch.load(f"{path}/model.pt")))
    job.load()                                     # resume when a checkpoint exists
    for epoch in range(int(hps["epochs"])):
        ...
        job.report(epoch, loss=loss, accuracy=acc)  # "step=3 loss=0.25 accuracy=0.91"
        job.save(epoch)                             # $EM_CHECKPOINT_DIR/0003
    torch.save(model, job.model_dir() / "model.pt")
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "JobEnvironmentError",
    "bind",
    "dataset",
    "hyperparameters",
    "load",
    "model_dir",
    "report",
    "save",
]

LATEST_FILE = "latest"
"""Name of the text file in a checkpoint folder that names the most recent checkpoint."""

_METRIC_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")  # what a Katib-style ``name=value`` parses
_NUMBERED = re.compile(r"^\d+$")

_bound_save: Callable[[str], None] | None = None
_bound_load: Callable[[str], None] | None = None


class JobEnvironmentError(RuntimeError):
    """A variable of the job contract is missing or malformed."""


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise JobEnvironmentError(
            f"environment variable {name} is not set; it is set by OpenMaker inside a "
            f"training (set it yourself to run this script locally)"
        )
    return value


# --------------------------------------------------------------------------- metrics


def _format_value(value: float) -> str:
    # repr() of a float is the shortest round-trip form: 0.93, 1e-05, 12.0
    return repr(float(value))


def report(step: int, **metrics: float) -> None:
    """Print one metric line ``step=<step> name=value ...`` to stdout (flushed).

    The line is what a hyperparameter tuning's metrics collector reads. When
    ``$EM_METRICS_FILE`` is set, a JSON line ``{"step": ..., "timestamp": ...,
    "metrics": {...}}`` is appended to it as well (non-finite values become ``null``).

    Example::

        job.report(3, loss=0.25, accuracy=0.91)   # prints "step=3 loss=0.25 accuracy=0.91"
    """
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError(f"step must be an int, not {type(step).__name__}")
    values: dict[str, float] = {}
    for name, value in metrics.items():
        if not _METRIC_NAME.match(name):
            raise ValueError(f"metric name {name!r} may hold only letters, digits, '_' and '-'")
        try:
            values[name] = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"metric {name}={value!r} is not a number") from None
    parts = [f"step={step}"] + [f"{name}={_format_value(v)}" for name, v in values.items()]
    sys.stdout.write(" ".join(parts) + "\n")
    sys.stdout.flush()
    metrics_file = os.environ.get("EM_METRICS_FILE")
    if metrics_file:
        record = {
            "step": step,
            "timestamp": time.time(),
            "metrics": {n: (v if math.isfinite(v) else None) for n, v in values.items()},
        }
        path = Path(metrics_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, allow_nan=False) + "\n")


# ------------------------------------------------------------------------ checkpoints


def bind(
    save: Callable[[str], None] | None = None, load: Callable[[str], None] | None = None
) -> None:
    """Register the functions :func:`save` and :func:`load` call with a checkpoint folder.

    Each call replaces both; ``bind()`` with no arguments unbinds them.

    Example::

        job.bind(save=lambda path: model.save(f"{path}/weights.h5"),
                 load=lambda path: model.load_weights(f"{path}/weights.h5"))
    """
    global _bound_save, _bound_load
    _bound_save = save
    _bound_load = load


def _checkpoint_name(checkpoint: str | int) -> str:
    if isinstance(checkpoint, bool):
        raise TypeError("checkpoint must be a name or a number, not a bool")
    if isinstance(checkpoint, int):
        if checkpoint < 0:
            raise ValueError(f"checkpoint number must not be negative: {checkpoint}")
        return f"{checkpoint:04d}"
    name = str(checkpoint).strip()
    if _NUMBERED.match(name):
        return f"{int(name):04d}"
    if not name or name in {".", "..", LATEST_FILE} or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"invalid checkpoint name {checkpoint!r}")
    return name


def _numbered(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NUMBERED.match(p.name)]
    return sorted(found, key=lambda p: int(p.name))


def save(
    checkpoint: str | int | None = None, *, save_fn: Callable[[str], None] | None = None
) -> str:
    """Create a checkpoint folder under ``$EM_CHECKPOINT_DIR`` and return its path.

    Without ``checkpoint`` the folder is the next number (``0001``, ``0002``, ...); a
    number (or a string of digits) is zero-padded to 4 digits; any other string is used
    as the folder name. ``save_fn(path)`` is called, or else the function registered with
    :func:`bind`; with neither, write the files into the returned folder yourself. The
    ``latest`` file in ``$EM_CHECKPOINT_DIR`` then names this checkpoint (only after the
    save function returned, so a failed save never becomes the latest).

    Example::

        path = job.save(epoch, save_fn=lambda p: torch.save(state, f"{p}/state.pt"))
    """
    root = Path(_env("EM_CHECKPOINT_DIR"))
    if checkpoint is None:
        existing = _numbered(root)
        name = f"{int(existing[-1].name) + 1 if existing else 1:04d}"
    else:
        name = _checkpoint_name(checkpoint)
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    fn = save_fn if save_fn is not None else _bound_save
    if fn is not None:
        fn(str(path))
    tmp = root / f".{LATEST_FILE}.{os.getpid()}.tmp"
    tmp.write_text(name + "\n", encoding="utf-8")
    os.replace(tmp, root / LATEST_FILE)
    return str(path)


def _latest_in(root: Path, *, folder_itself: bool) -> Path | None:
    if not root.is_dir():
        return None
    latest = root / LATEST_FILE
    if latest.is_file():
        name = latest.read_text(encoding="utf-8").strip()
        if name and "/" not in name and (root / name).is_dir():
            return root / name
    numbered = _numbered(root)
    if numbered:
        return numbered[-1]
    if folder_itself and any(root.iterdir()):
        # a checkpoint given as plain files (not made by save()): the folder is the checkpoint
        return root
    return None


def load(checkpoint: str | int | None = None) -> str | None:
    """Find a checkpoint, call the load function bound with :func:`bind`, return its path.

    It looks in ``$EM_CHECKPOINT_INPUT_DIR`` (the checkpoint the training was started
    with) and then in ``$EM_CHECKPOINT_DIR``. Without ``checkpoint`` it takes the one the
    ``latest`` file names, or else the highest number; an input folder holding plain files
    is itself the checkpoint. Returns None when there is no checkpoint (a fresh start);
    a named checkpoint that is not found raises FileNotFoundError.

    Example::

        job.bind(load=lambda path: model.load_state_dict(torch.load(f"{path}/model.pt")))
        start = 0 if job.load() is None else resumed_epoch + 1
    """
    roots: list[tuple[Path, bool]] = []
    input_dir = os.environ.get("EM_CHECKPOINT_INPUT_DIR")
    output_dir = os.environ.get("EM_CHECKPOINT_DIR")
    if input_dir:
        roots.append((Path(input_dir), True))
    if output_dir:
        roots.append((Path(output_dir), False))
    if not roots:
        raise JobEnvironmentError(
            "neither EM_CHECKPOINT_INPUT_DIR nor EM_CHECKPOINT_DIR is set; they are set by "
            "OpenMaker inside a training (set one yourself to run this script locally)"
        )
    found: Path | None = None
    if checkpoint is None:
        for root, folder_itself in roots:
            found = _latest_in(root, folder_itself=folder_itself)
            if found is not None:
                break
        if found is None:
            return None
    else:
        name = _checkpoint_name(checkpoint)
        for root, _ in roots:
            if (root / name).is_dir():
                found = root / name
                break
        if found is None:
            searched = ", ".join(str(root) for root, _ in roots)
            raise FileNotFoundError(f"checkpoint {name!r} not found in {searched}")
    if _bound_load is not None:
        _bound_load(str(found))
    return str(found)


# ------------------------------------------------------------------- job contract


def hyperparameters() -> dict[str, str]:
    """All hyperparameters of the training, from ``$EM_HPS``, as strings.

    Example::

        epochs = int(job.hyperparameters().get("epochs", "10"))
    """
    raw = _env("EM_HPS")
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise JobEnvironmentError(f"EM_HPS is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise JobEnvironmentError(f"EM_HPS must be a JSON object, not {type(parsed).__name__}")
    return {
        str(key): value if isinstance(value, str) else json.dumps(value)
        for key, value in parsed.items()
    }


def _dataset_names() -> list[str]:
    names: list[str] = []
    try:
        listed = json.loads(os.environ.get("EM_DATASETS") or "[]")
    except ValueError:
        listed = []
    if isinstance(listed, list):
        names = [
            str(d["datasetName"]) for d in listed if isinstance(d, dict) and "datasetName" in d
        ]
    if not names:
        names = [
            k[len("EM_DATASET_") :].lower() for k in os.environ if k.startswith("EM_DATASET_")
        ]
    return sorted(names)


def dataset(name: str) -> Path:
    """The folder where the dataset ``name`` was downloaded (``$EM_DATASET_<NAME>``).

    ``NAME`` is the name upper-cased with every other character than letters and digits
    made ``_``; the ``EM_DATASETS`` list is the fallback.

    Example::

        for csv_file in job.dataset("train").glob("*.csv"):
            ...
    """
    variable = "EM_DATASET_" + "".join(c if c.isalnum() else "_" for c in name).upper()
    value = os.environ.get(variable)
    if not value:
        try:
            listed = json.loads(os.environ.get("EM_DATASETS") or "[]")
        except ValueError:
            listed = []
        for entry in listed if isinstance(listed, list) else []:
            if isinstance(entry, dict) and entry.get("datasetName") == name and entry.get("path"):
                return Path(str(entry["path"]))
        available = ", ".join(_dataset_names()) or "none"
        raise JobEnvironmentError(
            f"environment variable {variable} is not set: the training has no dataset "
            f"{name!r} (datasets given: {available})"
        )
    return Path(value)


def model_dir() -> Path:
    """The folder (``$EM_MODEL_DIR``, created if needed) whose files become the model.

    Example::

        joblib.dump(model, job.model_dir() / "model.joblib")
    """
    path = Path(_env("EM_MODEL_DIR"))
    path.mkdir(parents=True, exist_ok=True)
    return path
