"""A pod's supervisor with real processes: the runtime restarts on its port after a crash,
each exit is recorded, the delay grows for a runtime that keeps failing, and ``stop`` ends
it for good."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import requests

from chalicelib.objectstore.local import LocalFileStore
from runners.logsink import LogSink
from serving.pods import PodSupervisor
from tests.serving.runtime import REPO_ROOT, free_port

pytestmark = pytest.mark.slow


def wait_for(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[LogSink]:
    opened = LogSink(LocalFileStore(tmp_path / "store"), "logs/pod/")
    yield opened
    opened.close()


def log_lines(tmp_path: Path, sink: LogSink) -> list[str]:
    sink.flush()
    bodies = []
    for chunk in sorted((tmp_path / "store" / "logs" / "pod").rglob("*.jsonl")):
        bodies += [json.loads(line)["body"] for line in chunk.read_text().splitlines()]
    return bodies


def echo_pod(tmp_path: Path, sink: LogSink, **options: object) -> PodSupervisor:
    port = free_port()
    argv = [sys.executable, "-m", "tests.serving.echo_pod", str(port), "p", str(tmp_path)]
    return PodSupervisor(
        argv,
        port=port,
        env=dict(os.environ),
        cwd=REPO_ROOT,
        sink=sink,
        **options,  # type: ignore[arg-type]
    )


def test_a_crashed_runtime_comes_back_on_its_port_and_stop_ends_it(
    tmp_path: Path, sink: LogSink
) -> None:
    pod = echo_pod(tmp_path, sink, backoff=(0.2,))
    pod.start()
    try:
        wait_for(pod.ready)
        url = f"http://127.0.0.1:{pod.port}/v2/models/m/infer"
        assert requests.post(url, json={}, timeout=5).json()["pod"] == "p"
        first = pod.status()["pid"]
        assert first is not None

        os.kill(first, signal.SIGKILL)
        wait_for(lambda: pod.restarts == 1 and pod.ready())

        status = pod.status()
        assert status["pid"] not in (None, first) and status["lastExitCode"] == -9
        assert requests.post(url, json={}, timeout=5).json()["pod"] == "p"
    finally:
        pod.stop()
    second = status["pid"]
    assert not psutil.pid_exists(second) or psutil.Process(second).status() == "zombie"
    time.sleep(0.5)
    assert pod.restarts == 1 and pod.status()["pid"] is None  # stopped: never restarted
    assert any(
        "exited -9" in line and "restarting in 0.2 s" in line for line in log_lines(tmp_path, sink)
    )


def test_a_runtime_that_keeps_failing_is_restarted_later_each_time(
    tmp_path: Path, sink: LogSink
) -> None:
    argv = [sys.executable, "-c", "import sys; print('cannot load the model'); sys.exit(3)"]
    pod = PodSupervisor(
        argv,
        port=free_port(),
        env=dict(os.environ),
        cwd=REPO_ROOT,
        sink=sink,
        backoff=(0.1, 0.4, 1.6),
    )
    pod.start()
    try:
        wait_for(lambda: len(pod.exits) >= 3)
    finally:
        pod.stop()
    assert [e.code for e in pod.exits[:3]] == [3, 3, 3]
    gaps = [b.at - a.at for a, b in zip(pod.exits, pod.exits[1:], strict=False)][:2]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.4 and gaps[1] > gaps[0]
    assert not pod.ready() and pod.status()["lastExitCode"] == 3
    assert "cannot load the model" in log_lines(tmp_path, sink)
