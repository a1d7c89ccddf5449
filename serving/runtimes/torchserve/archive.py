"""Turning a model directory into something TorchServe registers (the seed's appendix 11).

A directory holds either a model archive (exactly one ``*.mar``, made with
torch-model-archiver) or the parts of one: a weights file (``.pt``, ``.pth`` or ``.bin``),
``model.py`` (``--model-file``), ``handler.py`` (``--handler``), optionally
``requirements.txt`` (``--requirements-file``) and ``extra/`` (``--extra-files``). The
parts are archived here, for the user, with torch-model-archiver.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from serving.runtimes.torchserve.errors import ModelDirError

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin")
ARCHIVER_TIMEOUT_S = 600


@dataclass(frozen=True)
class ModelStore:
    """Where TorchServe finds the model (``model_store``) and what to register (``url``)."""

    path: Path
    url: str


def prepare_model_store(model_dir: Path, model_name: str, work_dir: Path) -> ModelStore:
    """The model store for ``model_dir``: the directory itself for a .mar, else an archive.

    Raises:
        ModelDirError: the directory is missing, or holds neither layout, or archiving failed.
    """
    if not model_dir.is_dir():
        raise ModelDirError(f"model directory {model_dir} does not exist")
    archives = sorted(model_dir.glob("*.mar"))
    if len(archives) == 1:
        return ModelStore(path=model_dir.resolve(), url=archives[0].name)
    if len(archives) > 1:
        names = ", ".join(path.name for path in archives)
        raise ModelDirError(f"model directory {model_dir} holds several .mar files: {names}")
    store = work_dir / "model-store"
    store.mkdir(parents=True, exist_ok=True)
    _archive(model_dir, model_name, store)
    return ModelStore(path=store.resolve(), url=model_name)


def _weights_file(model_dir: Path) -> Path:
    weights = sorted(p for p in model_dir.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if len(weights) != 1:
        found = ", ".join(p.name for p in weights) or "none"
        raise ModelDirError(
            f"model directory {model_dir} needs a .mar, or exactly one weights file "
            f"({', '.join(WEIGHT_SUFFIXES)}) with model.py and handler.py; weights found: {found}"
        )
    return weights[0]


def _archive(model_dir: Path, model_name: str, store: Path) -> None:
    weights = _weights_file(model_dir)
    missing = [name for name in ("model.py", "handler.py") if not (model_dir / name).is_file()]
    if missing:
        raise ModelDirError(
            f"model directory {model_dir} has weights but lacks {', '.join(missing)} "
            "(or put a .mar made with torch-model-archiver there)"
        )
    command = [
        sys.executable,
        "-m",
        "model_archiver.model_packaging",
        "--model-name",
        model_name,
        "--version",
        "1.0",
        "--model-file",
        str(model_dir / "model.py"),
        "--serialized-file",
        str(weights),
        "--handler",
        str(model_dir / "handler.py"),
        "--export-path",
        str(store),
        "--archive-format",
        "no-archive",
        "--force",
    ]
    if (model_dir / "requirements.txt").is_file():
        command += ["--requirements-file", str(model_dir / "requirements.txt")]
    if (model_dir / "extra").is_dir():
        command += ["--extra-files", str(model_dir / "extra")]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=ARCHIVER_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ModelDirError(f"torch-model-archiver failed on {model_dir}: {reason[0]}")
