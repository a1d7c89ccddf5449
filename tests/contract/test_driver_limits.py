"""The job driver's limits with real processes: the timeout, the data storage size while the
code runs, and a stop during the upload (nothing half-published)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from chalicelib.objectstore import LocalFileStore
from runners.logsink import LogSink
from runners.nodejob import JobFailedError, NodeJob
from runners.training import TrainingDriver


def job(tmp_path: Path, **spec: Any) -> dict[str, Any]:
    base = {
        "flavor": {"name": "m2.c1m2", "vcpus": 1, "ram": 2048},
        "model_upload_uri": f"file://{tmp_path / 'published'}",
        "timeout_minutes": 60,
        "instance_count": 1,
    }
    base.update(spec)
    return {
        "trainingId": "t-1",
        "appKey": "app",
        "region": "kr1",
        "experimentId": "e-1",
        "spec": base,
        "logPrefix": "logs/training/app/t-1/",
    }


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> NodeJob:
    monkeypatch.setenv("OPENMAKER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPENMAKER_FILE_ROOTS", str(tmp_path))
    from chalicelib.config import reset_settings

    reset_settings()
    sink = LogSink(LocalFileStore(tmp_path / "store"), "logs/training/app/t-1/")
    return NodeJob(job(tmp_path), 0, sink)


def watching_driver(node: NodeJob) -> TrainingDriver:
    """A driver around ``node`` without a control plane (only its watch loop is used)."""
    driver = TrainingDriver.__new__(TrainingDriver)
    driver.job = node.job
    driver.stop_requested = threading.Event()
    driver.node = node
    return driver


def start(node: NodeJob, code: str) -> None:
    node.layout.create()
    (node.layout.source / "main.py").write_text(code)
    node.spec["entry_point"] = "main.py"
    node.python = sys.executable
    node.start(None)


def test_the_timeout_kills_the_code_and_says_so(node: NodeJob) -> None:
    node.spec["timeout_minutes"] = 0.002  # 0.12 s
    start(node, "import time; time.sleep(30)")
    driver = watching_driver(node)
    with pytest.raises(JobFailedError) as failed:
        driver._watch(lambda: node.process.poll() if node.process else 0, [node])
    assert failed.value.status == "FAIL_TRAIN"
    assert "exceeded timeout of 0 minutes" in failed.value.reason
    assert node.process is not None and node.process.poll() is not None  # killed


def test_growing_past_the_data_storage_size_fails_while_running(
    node: NodeJob, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("runners.training.STORAGE_CHECK_SECONDS", 0.1)
    node.spec["data_storage_size"] = 10
    start(
        node,
        "import os, time\n"
        "with open(os.path.join(os.environ['EM_MODEL_DIR'], 'huge.bin'), 'wb') as f:\n"
        "    f.truncate(11 * 10**9)\n"  # sparse: 11 GB on paper, nothing on disk
        "time.sleep(30)\n",
    )
    driver = watching_driver(node)
    with pytest.raises(JobFailedError) as failed:
        driver._watch(lambda: node.process.poll() if node.process else 0, [node])
    assert failed.value.status == "FAIL_TRAIN"
    assert "data storage exceeded" in failed.value.reason and "10 GB" in failed.value.reason


def test_a_stop_during_the_upload_removes_what_was_published(
    node: NodeJob, tmp_path: Path
) -> None:
    node.layout.create()
    for index in range(5):
        (node.layout.model / f"part-{index}.bin").write_bytes(b"x" * 10)
    calls = iter([False, False, True])
    with pytest.raises(JobFailedError) as stopped:
        node.upload(lambda: next(calls))
    assert stopped.value.status == "STOPPED"
    published = tmp_path / "published"
    assert sorted(p.name for p in published.iterdir()) == ["part-0.bin", "part-1.bin"]
    node.remove_partial_upload()
    assert list(published.iterdir()) == []
