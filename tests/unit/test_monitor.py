"""The runner's sampler and reporter, with a fake process, GPU source and clock."""

from __future__ import annotations

from typing import Any

import pytest

from runners.monitor import MAX_BUFFERED, MetricsReporter, Sampler


class FakeProcess:
    def __init__(self) -> None:
        self.cpu = 0.0

    def cpu_seconds(self) -> float:
        return self.cpu

    def memory_bytes(self) -> int:
        return 123 * 2**20


def test_cpu_percent_is_cpu_time_over_wall_time_and_gpus_are_averaged() -> None:
    process, now = FakeProcess(), [100.0]
    sampler = Sampler(
        "node0",
        lambda: process,  # type: ignore[arg-type,return-value]
        gpus=lambda: [(0.0, 2**30), (50.0, 2**30)],
        clock=lambda: now[0],
    )
    first = sampler.sample()
    process.cpu, now[0] = 3.0, 102.0  # 3 CPU-seconds in 2 s: 150 %
    second = sampler.sample()
    assert first is not None and first["cpuPercent"] == 0.0
    assert second is not None and second["cpuPercent"] == 150.0
    assert second["memoryBytes"] == 123 * 2**20
    assert second["gpuPercent"] == 25.0 and second["gpuMemoryBytes"] == 2 * 2**30
    assert second["node"] == "node0"


def test_no_process_yet_means_no_sample() -> None:
    assert Sampler("node0", lambda: None).sample() is None


def test_samples_that_could_not_be_sent_wait_for_the_next_round() -> None:
    sent: list[list[dict[str, Any]]] = []
    failing = [True]

    def send(samples: list[dict[str, Any]]) -> None:
        if failing[0]:
            raise ConnectionError("control plane away")
        sent.append(list(samples))

    reporter = MetricsReporter(lambda: [{"n": 1}], send, interval=60)
    reporter.round()
    reporter.round()
    assert sent == [] and len(reporter.buffer) == 2
    failing[0] = False
    reporter.round()
    assert sent == [[{"n": 1}] * 3] and reporter.buffer == []


def test_the_buffer_is_bounded_while_the_control_plane_is_away() -> None:
    def send(_samples: list[dict[str, Any]]) -> None:
        raise ConnectionError

    reporter = MetricsReporter(lambda: [{"n": 1}] * 100, send, interval=60)
    for _ in range(20):
        reporter.round()
    assert len(reporter.buffer) == MAX_BUFFERED


@pytest.mark.parametrize("interval", [0.05])
def test_the_thread_reports_until_stopped(interval: float) -> None:
    sent: list[int] = []
    reporter = MetricsReporter(lambda: [{"n": 1}], lambda s: sent.append(len(s)), interval)
    reporter.start()
    import time

    time.sleep(interval * 6)
    reporter.stop()
    count = len(sent)
    time.sleep(interval * 3)
    assert count >= 2 and len(sent) == count  # nothing after stop
