"""Runner backends: the Ray Jobs API in production, a fake in unit tests (see ``base``)."""

from __future__ import annotations

from functools import lru_cache

from chalicelib.config import get_settings
from chalicelib.dispatch.base import (
    BackendUnavailableError,
    JobInfo,
    JobState,
    JobSubmission,
    NodeCapacity,
    RunnerBackend,
)
from chalicelib.dispatch.ray_jobs import RayJobsBackend

_override: RunnerBackend | None = None


@lru_cache(maxsize=4)
def _ray_backend(address: str) -> RayJobsBackend:
    return RayJobsBackend(address)


def get_backend() -> RunnerBackend:
    """The configured backend; raises ``BackendUnavailableError`` when no Ray address is known."""
    if _override is not None:
        return _override
    address = get_settings().ray_address
    if not address:
        raise BackendUnavailableError(
            "no Ray cluster configured: set RAY_ADDRESS or use openmaker up"
        )
    return _ray_backend(address)


def set_backend(backend: RunnerBackend | None) -> None:
    """Use ``backend`` instead of the configured one (tests); None restores the default."""
    global _override
    _override = backend


__all__ = [
    "BackendUnavailableError",
    "JobInfo",
    "JobState",
    "JobSubmission",
    "NodeCapacity",
    "RayJobsBackend",
    "RunnerBackend",
    "get_backend",
    "set_backend",
]
