"""Sampling a job's processes for monitoring charts: CPU, memory and, when there are GPUs,
their utilization (``nvidia-smi``), reported to the control plane every few seconds."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from runners.process import UserProcess

SAMPLE_SECONDS = float(os.environ.get("OPENMAKER_SAMPLE_SECONDS", "5"))
MAX_BUFFERED = 720  # an hour of samples at 5 s if the control plane is away

GpuSource = Callable[[], list[tuple[float, int]]]  # per GPU: (utilization %, memory bytes)


def nvidia_smi_source() -> GpuSource | None:
    """The GPUs this job may use (``CUDA_VISIBLE_DEVICES``), read with ``nvidia-smi``."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    wanted = {v.strip() for v in visible.split(",")} if visible else None

    def read() -> list[tuple[float, int]]:
        out = subprocess.run(
            [
                binary,
                "--query-gpu=index,utilization.gpu,memory.used",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
        gpus = []
        for line in out.strip().splitlines():
            index, util, memory = (part.strip() for part in line.split(","))
            if wanted is None or index in wanted:
                gpus.append((float(util), int(float(memory)) * 2**20))
        return gpus

    return read


class Sampler:
    """CPU % (over the time since the last sample), memory and GPU use of one node."""

    def __init__(
        self,
        node: str,
        process: Callable[[], UserProcess | None],
        gpus: GpuSource | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.process = process
        self.gpus = gpus
        self.clock = clock
        self._last: tuple[float, float] | None = None

    def sample(self) -> dict[str, Any] | None:
        process = self.process()
        if process is None:
            return None
        now, cpu = self.clock(), process.cpu_seconds()
        last, self._last = self._last, (now, cpu)
        cpu_percent = 0.0
        if last is not None and now > last[0]:
            cpu_percent = max(0.0, (cpu - last[1]) / (now - last[0]) * 100)
        sample: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(),
            "node": self.node,
            "cpuPercent": round(cpu_percent, 2),
            "memoryBytes": process.memory_bytes(),
        }
        if self.gpus is not None:
            gpus = self.gpus()
            if gpus:
                sample["gpuPercent"] = round(sum(u for u, _ in gpus) / len(gpus), 2)
                sample["gpuMemoryBytes"] = sum(m for _, m in gpus)
        return sample


class MetricsReporter:
    """A daemon thread: every ``interval`` seconds, ``collect()`` samples and ``send`` them;
    samples that could not be sent wait (bounded) for the next round."""

    def __init__(
        self,
        collect: Callable[[], list[dict[str, Any]]],
        send: Callable[[list[dict[str, Any]]], object],
        interval: float = SAMPLE_SECONDS,
    ) -> None:
        self.collect = collect
        self.send = send
        self.interval = interval
        self.buffer: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.round()

    def round(self) -> None:
        try:
            self.buffer += self.collect()
        except Exception:  # noqa: BLE001 - a sample lost is not a job lost
            return
        if not self.buffer:
            return
        try:
            self.send(self.buffer)
            self.buffer = []
        except Exception:  # noqa: BLE001 - kept for the next round
            self.buffer = self.buffer[-MAX_BUFFERED:]

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)
        self.round()
