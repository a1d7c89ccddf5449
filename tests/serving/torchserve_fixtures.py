"""The TorchServe runtime's test models and process, built at test time (nothing downloaded).

The iris model is a user's model as the seed's appendix 11 lays it out: ``model.py`` and a
custom ``handler.py`` (both in ``tests/serving/torchserve_iris``), a ``state_dict`` saved
with ``torch.save``, and the same packed as ``iris.mar`` with torch-model-archiver.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.serving.runtime import REPO_ROOT, free_port

IRIS_SOURCE = Path(__file__).resolve().parent / "torchserve_iris"
SETOSA = [5.1, 3.5, 1.4, 0.2]
VERSICOLOR = [6.4, 3.2, 4.5, 1.5]
VIRGINICA = [6.3, 3.3, 6.0, 2.5]
FAULT_VALUE = 666.0
CRASH_VALUE = 999.0


def iris_weights_dir(model_dir: Path) -> Path:
    """weights (``iris.pt``, trained a few hundred full-batch steps) + model.py + handler.py."""
    import torch
    from sklearn.datasets import load_iris

    spec = importlib.util.spec_from_file_location("iris_model", IRIS_SOURCE / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    features, labels = load_iris(return_X_y=True)
    inputs = torch.tensor(features, dtype=torch.float32)
    targets = torch.tensor(labels)
    model = module.IrisNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), model_dir / "iris.pt")
    for name in ("model.py", "handler.py"):
        shutil.copy(IRIS_SOURCE / name, model_dir / name)
    return model_dir


def iris_mar_dir(weights_dir: Path, model_dir: Path) -> Path:
    """The same model as ``iris.mar``, made with torch-model-archiver as a user would."""
    model_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "model_archiver.model_packaging",
            "--model-name",
            "iris",
            "--version",
            "1.0",
            "--model-file",
            str(weights_dir / "model.py"),
            "--serialized-file",
            str(weights_dir / "iris.pt"),
            "--handler",
            str(weights_dir / "handler.py"),
            "--export-path",
            str(model_dir),
        ],
        check=True,
        capture_output=True,
    )
    return model_dir


def processes_mentioning(text: str) -> list[str]:
    """``ps`` lines (pid and command) of processes whose command line holds ``text``."""
    listing = subprocess.run(
        ["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True
    ).stdout
    return [line.strip() for line in listing.splitlines() if text in line]


class TorchServeRuntime:
    """``python -m serving.runtimes.torchserve`` on a free port, with its own work dir."""

    def __init__(self, model_dir: Path, root: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.work_dir = root / "work"
        self.log = root / "runtime.log"
        command = [
            sys.executable,
            "-m",
            "serving.runtimes.torchserve",
            "--model-name",
            "iris",
            "--model-dir",
            str(model_dir),
            "--http-port",
            str(self.port),
            "--work-dir",
            str(self.work_dir),
        ]
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 90.0) -> TorchServeRuntime:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise AssertionError(f"runtime exited {self.popen.returncode}:\n{self.output()}")
            try:
                if requests.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"runtime not ready after {timeout} s:\n{self.output()}")

    def torchserve_config(self) -> dict[str, str]:
        lines = (self.work_dir / "config.properties").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the runtime and anything left running from its work dir."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        for line in processes_mentioning(str(self.work_dir)):
            os.kill(int(line.split()[0]), signal.SIGKILL)
