"""What every run-to-completion job (training, hyperparameter tuning) shares: dispatch to the
runner pool, the driver's reports, and the tick's reconciliation with Ray.

A :class:`JobKind` names the table, the status machine, the FAIL_X status and the driver
module of one kind of job; the functions here move rows of any kind with compare-and-set.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from chalicelib.config import get_settings
from chalicelib.dispatch import (
    BackendUnavailableError,
    JobState,
    JobSubmission,
    NodeCapacity,
    get_backend,
)
from chalicelib.domain import states
from chalicelib.domain.catalog import Flavor
from chalicelib.domain.common import utc_now
from chalicelib.errors import (
    BadRequestError,
    DependentResourceError,
    InvalidTransition,
    NotFoundError,
    StaleStateError,
)
from chalicelib.objectstore import platform_store
from chalicelib.observability import logger
from chalicelib.store.db import Database
from chalicelib.store.repository import set_status

NOT_DISPATCHED_GRACE = timedelta(seconds=3)  # the create request dispatches first
UNREACHABLE_LIMIT = timedelta(minutes=10)  # then CREATE_FAILED: the cluster is gone
TIMEOUT_GRACE = timedelta(minutes=2)  # the driver enforces the timeout; this is a backstop


@dataclass(frozen=True)
class JobKind:
    kind: str  # "training": log and result paths, Ray metadata
    runner_kind: str  # "training", "hyperparameter-tuning": the driver's token and URLs
    label: str  # for messages
    model: Any  # the SQLAlchemy model (StatusMixin with dispatched/started/ended_at, spec)
    machine: states.StateMachine[Any]
    fail_status: str
    module: str  # the driver: python -m <module> <id>
    # (num_cpus, num_gpus, memory_bytes) the driver itself must hold, from the spec
    driver_resources: Callable[[dict[str, Any]], tuple[float, float, int]]
    # how many flavor-sized slots the job needs from the cluster at once
    slots: Callable[[dict[str, Any]], int]
    # called after each step is stored (a tuning kills its unfinished trials when it ends)
    on_advance: Callable[[Session, Any, str], None] | None = None

    def result_key(self, job_id: str) -> str:
        return f"jobs/{self.kind}/{job_id}/result.json"


def report(session: Session, job: JobKind, job_id: str, target: str, reason: str | None) -> Any:
    """Apply a driver's report: walk the allowed steps to ``target`` (see ``states.path``).

    A report of the status the job already has is a no-op; a report that would leave a
    terminal status raises ``InvalidTransition`` (409) and changes nothing.
    """
    if job.machine.parse(target) is None:
        known = ", ".join(str(s) for s in job.machine.statuses)
        raise BadRequestError(f"status {target[:64]} is not a {job.label} status; one of {known}")
    row = session.get(job.model, job_id)
    if row is None:
        raise NotFoundError(f"{job.label} {job_id[:64]} not found")
    advance(session, job, row, target, reason)
    return row


def advance(
    session: Session, job: JobKind, row: Any, target: str, reason: str | None, **extra: Any
) -> None:
    machine = job.machine
    steps = states.path(machine, row.status, target)
    for step in steps:
        values: dict[str, Any] = {"updated_at": utc_now()}
        if step == "RUNNING" and row.started_at is None:
            values["started_at"] = utc_now()
        if machine.is_terminal(step):
            values["ended_at"] = utc_now()
            if row.started_at is None and step != "CREATE_FAILED":
                values["started_at"] = values["ended_at"]
        last = step == steps[-1]
        if last:
            values.update(extra)
        keep_reason = reason if last else row.status_reason
        set_status(session, row, machine, step, reason=keep_reason, **values)
        session.refresh(row)
        if job.on_advance is not None:
            job.on_advance(session, row, str(step))


def request_stop(session: Session, job: JobKind, row: Any) -> bool:
    """The user's stop: STOP_IN_PROGRESS, or STOPPED at once for a job never dispatched.

    Returns whether Ray must be told (the driver then settles STOPPED, or the tick does).
    """
    if states.is_terminal(job.machine, row.status):
        raise InvalidTransition(job.kind, row.status, "STOP_IN_PROGRESS")
    if row.status == "STOP_IN_PROGRESS":
        return True
    never_dispatched = row.status == "CREATE_REQUESTED" and row.dispatched_at is None
    set_status(session, row, job.machine, "STOP_IN_PROGRESS", reason="stopped by the user")
    if never_dispatched:
        advance(session, job, row, "STOPPED", "stopped by the user before it ran")
    return not never_dispatched


def check_deletable(
    session: Session, job: JobKind, row: Any, dependents: dict[str, Callable[[Session, str], int]]
) -> None:
    """Refuse (409) to delete a job that has not ended or that other resources still use."""
    if not states.is_terminal(job.machine, row.status):
        raise DependentResourceError(
            f"{job.label} {row.name} is {row.status}; stop it and delete it when it has ended"
        )
    in_use = {label: count(session, row.id) for label, count in dependents.items()}
    in_use = {label: n for label, n in in_use.items() if n}
    if in_use:
        listed = ", ".join(f"{n} {label}" for label, n in sorted(in_use.items()))
        raise DependentResourceError(f"{job.label} {row.name} is used by {listed}")


def dispatch(database: Database, job: JobKind, job_id: str) -> None:
    """Submit a CREATE_REQUESTED job to Ray; safe to repeat (submission id = id)."""
    with database.session() as session:
        row = session.get(job.model, job_id)
        if row is None or row.status != "CREATE_REQUESTED":
            return
        spec, appkey, name = row.spec, row.appkey, row.name
    backend = get_backend()
    flavor = Flavor.model_validate(spec["flavor"])
    problem = capacity_problem(backend.nodes(), flavor, job.slots(spec))
    if problem:
        with database.session() as session:
            row = session.get(job.model, job_id)
            if row is not None and row.status == "CREATE_REQUESTED":
                advance(session, job, row, "CREATE_FAILED", problem)
        return
    cpus, gpus, memory = job.driver_resources(spec)
    backend.submit(
        JobSubmission(
            submission_id=job_id,
            entrypoint=f"{get_settings().runner_python} -m {job.module} {job_id}",
            env_vars=runner_env(),
            metadata={"kind": job.kind, "appkey": appkey, "name": name},
            num_cpus=cpus,
            num_gpus=gpus,
            memory_bytes=memory,
        )
    )
    with database.session() as session:
        row = session.get(job.model, job_id)
        if row is None:
            return
        if row.dispatched_at is None:
            row.dispatched_at = utc_now()
        if row.status == "CREATE_REQUESTED":
            # The driver's own report may have got there first.
            with contextlib.suppress(StaleStateError, InvalidTransition):
                advance(session, job, row, "CREATE_IN_PROGRESS", None)


def runner_env() -> dict[str, str]:
    """Where a driver finds the control plane, the platform storage and the storage settings
    (no secrets: object-store credentials come from the Ray nodes' own environment)."""
    settings = get_settings()
    passed = {
        name: os.environ[name]
        for name in (
            "OPENMAKER_FILE_ROOTS",
            "OPENMAKER_NAS_ROOTS",
            "OPENMAKER_S3_ENDPOINT_URL",
            "OPENMAKER_OBS_INSECURE",
            "OPENMAKER_SAMPLE_SECONDS",
            "OPENMAKER_POD_WATCH_SECONDS",
            "OPENMAKER_SCALE_DOWN_SECONDS",
        )
        if name in os.environ
    }
    return {
        **passed,
        "OPENMAKER_INTERNAL_API_URL": settings.internal_api_url,
        "OPENMAKER_RUNNER_SECRET_FILE": str(settings.runner_secret_file),
        "OPENMAKER_STORAGE_ROOT": str(settings.storage_root),
        "OPENMAKER_HOME": str(settings.home),
        "OPENMAKER_REGION": settings.region,
    }


def capacity_problem(nodes: list[NodeCapacity], flavor: Flavor, instances: int) -> str | None:
    """Why the cluster can never hold ``instances`` x ``flavor`` (None when it can)."""
    need_memory = flavor.ram * 2**20
    slots = 0
    for node in nodes:
        fits = [node.cpus // flavor.vcpus, node.memory_bytes // need_memory]
        if flavor.gpu_count:
            fits.append(node.gpus // flavor.gpu_count)
        slots += int(max(0, min(fits)))
    if slots >= instances:
        return None
    largest = max(nodes, key=lambda n: (n.cpus, n.memory_bytes), default=None)
    offer = (
        f"largest node: {largest.cpus:g} CPU, {largest.memory_bytes / 2**30:.1f} GiB memory, "
        f"{largest.gpus:g} GPU"
        if largest
        else "no alive nodes"
    )
    gpus = f", {flavor.gpu_count} GPU" if flavor.gpu_count else ""
    return (
        f"no capacity for flavor {flavor.name}: {instances} instance(s) of {flavor.vcpus} vCPU, "
        f"{flavor.ram / 1024:g} GiB{gpus} do not fit the Ray cluster ({len(nodes)} node(s); "
        f"{offer})"
    )


def read_result(job: JobKind, job_id: str) -> dict[str, Any] | None:
    store = platform_store()
    key = job.result_key(job_id)
    if not store.exists(key):
        return None
    try:
        data: dict[str, Any] = json.loads(store.read(key))
    except (ValueError, NotFoundError):
        return None
    return data


def reconcile(database: Database, job: JobKind) -> None:
    """Compare every unsettled job of this kind with Ray and settle what only the tick can."""
    with database.session(read_only=True) as session:
        model = job.model
        pending = session.execute(
            select(model.id, model.status, model.created_at, model.dispatched_at).where(
                model.status.not_in([str(s) for s in job.machine.terminal])
            )
        ).all()
    if not pending:
        return
    now = utc_now()
    try:
        backend = get_backend()
    except BackendUnavailableError:
        backend = None
    for job_id, status, created_at, dispatched_at in pending:
        try:
            if status == "CREATE_REQUESTED" and dispatched_at is None:
                if now - created_at < NOT_DISPATCHED_GRACE:
                    continue
                if backend is None:
                    _fail_if_stale(database, job, job_id, created_at, now)
                    continue
                dispatch(database, job, job_id)
            elif backend is not None:
                _reconcile_one(database, job, backend, job_id, now)
        except BackendUnavailableError as exc:
            logger.warning("runner backend unavailable", extra={"error": str(exc)})
            _fail_if_stale(database, job, job_id, created_at, now)
        except (StaleStateError, InvalidTransition):
            continue  # someone else moved it; the next tick looks again


def _fail_if_stale(
    database: Database, job: JobKind, job_id: str, created: datetime, now: datetime
) -> None:
    if now - created < UNREACHABLE_LIMIT:
        return
    with database.session() as session:
        row = session.get(job.model, job_id)
        if row is not None and row.status == "CREATE_REQUESTED":
            advance(
                session, job, row, "CREATE_FAILED", "the Ray cluster was unreachable for 10 min"
            )


def _reconcile_one(
    database: Database, job: JobKind, backend: Any, job_id: str, now: datetime
) -> None:
    info = backend.info(job_id)
    with database.session() as session:
        row = session.get(job.model, job_id)
        if row is None or states.is_terminal(job.machine, row.status):
            return
        if info is None:
            target = "STOPPED" if row.status == "STOP_IN_PROGRESS" else job.fail_status
            advance(
                session,
                job,
                row,
                target,
                f"the Ray cluster no longer knows job {job_id} "
                "(the cluster restarted or the job was removed)",
            )
            return
        if info.status.is_terminal:
            result = read_result(job, job_id)
            if row.status == "STOP_IN_PROGRESS":
                # A stop the user asked for wins over an outcome the driver could not report.
                advance(session, job, row, "STOPPED", row.status_reason or "stopped by the user")
            elif result is not None and result.get("status"):
                extra = {"status_detail": result["detail"]} if result.get("detail") else {}
                advance(session, job, row, result["status"], result.get("reason"), **extra)
            else:
                code = f", exit code {info.exit_code}" if info.exit_code is not None else ""
                advance(
                    session,
                    job,
                    row,
                    job.fail_status,
                    f"the job's driver ended ({info.status}{code}) without reporting: "
                    f"{info.message or 'no message from Ray'}",
                )
            return
        if row.status == "STOP_IN_PROGRESS":
            backend.stop(job_id)  # repeated until Ray says the job ended
            return
        timeout = timedelta(minutes=int(row.spec.get("timeout_minutes") or 43200))
        if row.started_at is not None and now - row.started_at > timeout + TIMEOUT_GRACE:
            backend.stop(job_id)
            minutes = int(timeout.total_seconds() // 60)
            advance(session, job, row, job.fail_status, f"exceeded timeout of {minutes} minutes")
        if info.status == JobState.RUNNING and row.status == "CREATE_REQUESTED":
            advance(session, job, row, "CREATE_IN_PROGRESS", None)
