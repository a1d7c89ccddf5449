"""An in-process runner backend for unit tests of the code around dispatch."""

from __future__ import annotations

import threading

from chalicelib.dispatch.base import JobInfo, JobState, JobSubmission, NodeCapacity


class FakeBackend:
    def __init__(self, nodes: list[NodeCapacity] | None = None) -> None:
        self.jobs: dict[str, JobSubmission] = {}
        self.states: dict[str, JobInfo] = {}
        self.submit_calls = 0
        self.stopped: list[str] = []
        self._nodes = nodes or [NodeCapacity("node-0", cpus=8, memory_bytes=32 * 2**30, gpus=0)]
        self._lock = threading.Lock()
        self.live_actors: dict[str, set[str]] = {}  # namespace -> names (set by tests)

    def submit(self, job: JobSubmission) -> None:
        with self._lock:
            self.submit_calls += 1
            if job.submission_id not in self.jobs:
                self.jobs[job.submission_id] = job
                self.states[job.submission_id] = JobInfo(JobState.PENDING)

    def info(self, submission_id: str) -> JobInfo | None:
        return self.states.get(submission_id)

    def stop(self, submission_id: str) -> bool:
        if submission_id not in self.states:
            return False
        self.stopped.append(submission_id)
        if not self.states[submission_id].status.is_terminal:
            self.states[submission_id] = JobInfo(
                JobState.STOPPED, "Job was intentionally stopped."
            )
        return True

    def nodes(self) -> list[NodeCapacity]:
        return list(self._nodes)

    def actors(self, namespace: str) -> set[str]:
        return set(self.live_actors.get(namespace, set()))

    def set_state(self, submission_id: str, status: JobState, message: str = "") -> None:
        self.states[submission_id] = JobInfo(status, message)

    def forget(self, submission_id: str) -> None:
        """As if the cluster restarted and lost the job."""
        self.jobs.pop(submission_id, None)
        self.states.pop(submission_id, None)
