"""The runner backend interface: how the control plane starts, watches and stops jobs.

The control plane never imports ``ray``; it talks to a backend through this interface. The
production backend is the Ray Jobs REST API (:mod:`chalicelib.dispatch.ray_jobs`); unit tests
use the in-process :class:`chalicelib.dispatch.fake.FakeBackend`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class JobState(StrEnum):
    """Ray's job statuses (``ray.job_submission.JobStatus``)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return self in (JobState.STOPPED, JobState.SUCCEEDED, JobState.FAILED)


@dataclass(frozen=True)
class JobSubmission:
    """One job: ``submission_id`` is the resource id, so submitting twice starts one job."""

    submission_id: str
    entrypoint: str
    env_vars: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    num_cpus: float = 0.0
    num_gpus: float = 0.0
    memory_bytes: int = 0


@dataclass(frozen=True)
class JobInfo:
    status: JobState
    message: str = ""
    exit_code: int | None = None


@dataclass(frozen=True)
class NodeCapacity:
    """What one alive node offers in total (not what is free right now)."""

    node_id: str
    cpus: float
    memory_bytes: float
    gpus: float
    labels: dict[str, str] = field(default_factory=dict)


class RunnerBackend(Protocol):
    def submit(self, job: JobSubmission) -> None:
        """Start the job; a job with this submission id already there is not an error."""
        ...

    def info(self, submission_id: str) -> JobInfo | None:
        """The job's state, or None when the cluster does not know it."""
        ...

    def stop(self, submission_id: str) -> bool:
        """Ask the job to stop (SIGTERM to its driver); False when it is not known."""
        ...

    def nodes(self) -> list[NodeCapacity]:
        """The alive nodes and their total resources."""
        ...

    def actors(self, namespace: str) -> set[str]:
        """Names of the named actors of ``namespace`` that are alive (or being made or
        restarted); raise :class:`BackendUnavailableError` when Ray cannot say."""
        ...


class BackendUnavailableError(Exception):
    """The cluster could not be reached; the tick retries later."""
