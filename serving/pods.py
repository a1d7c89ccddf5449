"""Serving pods: one runtime process each (the Python runtime, TorchServe, ``vllm serve``),
supervised where Ray placed it with the stage resource's resources.

:class:`PodSupervisor` starts the runtime's command on its port with the model's environment,
pumps its output into a log sink, and restarts it when it exits (after 1, 2, 4 ... up to 30
seconds; the delay starts over once a run lasted ``STABLE_SECONDS``), recording each exit.
``ready()`` asks the runtime's health route; the gateway routes only to ready pods. (The
Ray actor that holds a stage resource's resources and runs one supervisor comes with the
endpoint deployer.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from runners.process import UserProcess

BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
STABLE_SECONDS = 60.0  # a run this long resets the restart delay
HEALTH_TIMEOUT_SECONDS = 2.0


@dataclass
class Exit:
    code: int
    at: float  # Unix time
    ran_s: float


class PodSupervisor:
    """Run ``argv`` (which must listen on ``port``) and keep it running until ``stop()``."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        port: int,
        env: dict[str, str],
        cwd: Path,
        sink: Any,
        source: str = "pod",
        health_path: str = "/v2/health/ready",
        backoff: Sequence[float] = BACKOFF_SECONDS,
    ) -> None:
        self.argv, self.port, self.env, self.cwd, self.sink = list(argv), port, env, cwd, sink
        self.source = source  # the log source its lines and the restarts are written under
        self.health_path = health_path
        self.backoff = tuple(backoff)
        self.process: UserProcess | None = None
        self._started = 0.0
        self.exits: list[Exit] = []
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a restart and the stop never cross
        self._watcher: threading.Thread | None = None
        self._usage_mark: tuple[float, float, int] | None = None  # (monotonic, cpu s, pid)

    def start(self) -> None:
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="pod-watch", daemon=True)
        self._watcher.start()

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            self.process = UserProcess(
                self.argv, cwd=self.cwd, env=self.env, sink=self.sink, source=self.source
            )
            self._started = time.monotonic()

    def _watch(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            process = self.process
            assert process is not None
            code = process.wait(0.5)
            if code is None or self._stopping.is_set():
                continue
            process.wait_output(2.0)
            ran = time.monotonic() - self._started
            self.exits.append(Exit(int(code), time.time(), ran))
            failures = 0 if ran >= STABLE_SECONDS else failures
            delay = self.backoff[min(failures, len(self.backoff) - 1)]
            failures += 1
            self.sink.write(
                self.source,
                "stderr",
                f"the runtime exited {code} after {ran:.1f} s; restarting in {delay:g} s\n",
            )
            if self._stopping.wait(delay):
                return
            self.restarts += 1
            self._spawn()

    def ready(self) -> bool:
        try:
            reply = requests.get(
                f"http://127.0.0.1:{self.port}{self.health_path}", timeout=HEALTH_TIMEOUT_SECONDS
            )
        except requests.RequestException:
            return False
        return reply.status_code == 200

    def status(self) -> dict[str, Any]:
        process = self.process
        last = self.exits[-1] if self.exits else None
        return {
            "port": self.port,
            "pid": process.pid if process is not None and process.poll() is None else None,
            "restarts": self.restarts,
            "lastExitCode": last.code if last else None,
            "ready": self.ready(),
        }

    def usage(self) -> dict[str, float]:
        """What the runtime's process tree uses now: cores busy since the previous call
        (0 on the first) and resident memory. The pod autoscaler's metrics."""
        process = self.process
        if process is None or process.poll() is not None:
            return {"cpuCores": 0.0, "memoryBytes": 0.0}
        now, cpu = time.monotonic(), process.cpu_seconds()
        mark, self._usage_mark = self._usage_mark, (now, cpu, process.pid)
        cores = 0.0
        if mark is not None and mark[2] == process.pid and now > mark[0]:
            cores = max(0.0, (cpu - mark[1]) / (now - mark[0]))
        return {"cpuCores": cores, "memoryBytes": float(process.memory_bytes())}

    def stop(self, grace: float = 10.0) -> None:
        """Stop supervising and end the runtime (SIGTERM, SIGKILL after ``grace``)."""
        with self._lock:
            self._stopping.set()
            process = self.process
        if process is not None and process.poll() is None:
            process.kill_tree(grace)
        if self._watcher is not None:
            self._watcher.join(timeout=5)
