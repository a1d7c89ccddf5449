"""Trainings: create and dispatch to the runner pool, follow, stop, copy, delete, reconcile.

The lifecycle (``chalicelib.domain.states.TRAINING``) is moved by three writers, each with a
compare-and-set on the row's status and version:

* the API (create -> CREATE_REQUESTED, stop -> STOP_IN_PROGRESS);
* the dispatcher (CREATE_REQUESTED -> CREATE_IN_PROGRESS once Ray accepted the job, or
  CREATE_FAILED when no node can hold the flavor);
* the job's driver (``runners.training``) reporting through the internal API, and the tick,
  which settles what a dead driver could not report (from the driver's result file or from
  what Ray says of the job). Terminal statuses are never reopened.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Sequence
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
from chalicelib.domain.common import NAME_MAX_LENGTH, Paging, utc_now
from chalicelib.domain.experiment import ExperimentCreate
from chalicelib.domain.training import (
    Training,
    TrainingCreate,
    TrainingQuery,
    TrainingSpec,
)
from chalicelib.errors import (
    BadRequestError,
    DependentResourceError,
    InvalidTransition,
    NotFoundError,
    StaleStateError,
    ValidationError,
)
from chalicelib.objectstore import check_uri, parse_upload_uri, platform_store
from chalicelib.observability import logger
from chalicelib.services import experiments, monitoring
from chalicelib.services.catalog import get_catalog
from chalicelib.services.training_spec import validate_training_spec
from chalicelib.store import models
from chalicelib.store.db import Database
from chalicelib.store.repository import get_owned, page, set_status

KIND = "training"
MACHINE = states.TRAINING
S = states.TrainingStatus
SPEC_FIELDS = frozenset(TrainingSpec.model_fields)
URI_FIELDS = {
    "source_dir_uri": "sourceDirUri",
    "log_upload_uri": "logUploadUri",
    "model_upload_uri": "modelUploadUri",
    "check_point_input_uri": "checkPointInputUri",
    "check_point_upload_uri": "checkPointUploadUri",
}
OUTPUT_FIELDS = frozenset({"modelUploadUri", "checkPointUploadUri", "logUploadUri"})
TRAINING_ID_PLACEHOLDER = "{trainingId}"
NOT_DISPATCHED_GRACE = timedelta(seconds=3)  # the create request dispatches first
UNREACHABLE_LIMIT = timedelta(minutes=10)  # then CREATE_FAILED: the cluster is gone
TIMEOUT_GRACE = timedelta(minutes=2)  # the driver enforces the timeout; this is a backstop

# Later resources (models) register "how many of mine use this training" here.
DependentCounter = Callable[[Session, str], int]
DEPENDENTS: dict[str, DependentCounter] = {}


def _count_trainings(session: Session, experiment_id: str) -> int:
    rows = session.scalars(
        select(models.Training.id).where(models.Training.experiment_id == experiment_id)
    ).all()
    return len(rows)


experiments.DEPENDENTS["training(s)"] = _count_trainings


def log_prefix(appkey: str, training_id: str) -> str:
    return f"logs/{KIND}/{appkey}/{training_id}/"


def log_meta_key(appkey: str, training_id: str) -> str:
    """Where the driver says whether the job's logs are searchable (``useLog``); kept apart
    from the chunks so that a search lists one small object per job."""
    return f"logs-meta/{KIND}/{appkey}/{training_id}.json"


def result_key(training_id: str) -> str:
    return f"jobs/{KIND}/{training_id}/result.json"


def elapsed_seconds(row: models.Training, now: datetime | None = None) -> int | None:
    if row.started_at is None:
        return None
    end = row.ended_at or now or utc_now()
    return max(0, int((end - row.started_at).total_seconds()))


def to_view(row: models.Training, experiment_name: str | None) -> Training:
    spec = row.spec
    settings = get_settings()
    return Training.model_validate(
        {
            **{name: spec[name] for name in SPEC_FIELDS if name in spec},
            "training_id": row.id,
            "training_name": row.name,
            "description": row.description,
            "training_status_code": row.status,
            "status_reason": row.status_reason,
            "training_type_code": row.kind,
            "experiment": {"experiment_id": row.experiment_id, "experiment_name": experiment_name},
            "experiment_id": row.experiment_id,
            "flavor": spec["flavor"],
            "image": spec["image"],
            "algorithm": spec.get("algorithm"),
            "boot_storage": {"storage_size": 50},
            "data_storage_list": [{"storage_size": spec.get("data_storage_size")}],
            "tensorboard_access_uri": f"{settings.public_url}/tensorboard/{KIND}s/{row.id}/",
            "tensorboard_access_path": f"/tensorboard/{KIND}s/{row.id}/",
            "log_and_crash_app_key": row.appkey if spec.get("use_log") else None,
            "elapsed_time_seconds": elapsed_seconds(row),
            "zombie": row.zombie_since is not None,
            "zombie_since": row.zombie_since,
            "started_datetime": row.started_at,
            "ended_datetime": row.ended_at,
            "tag_list": row.tags,
            "app_key": row.appkey,
            "created_datetime": row.created_at,
            "updated_datetime": row.updated_at,
        }
    )


def check_uris(spec: TrainingSpec, appkey: str) -> None:
    """Refuse storage URIs this deployment may not use (scheme, file roots, NAS ids) and
    uploads of another tenant."""
    problems: list[dict[str, str]] = []
    uris = [(field, getattr(spec, attr)) for attr, field in URI_FIELDS.items()]
    uris += [(f"datasetList.{i}.dataUri", d.data_uri) for i, d in enumerate(spec.dataset_list)]
    for field, value in uris:
        if value is None:
            continue
        try:
            check_uri(value, field)
        except ValidationError as exc:
            problems.extend(exc.details or [])
            continue
        if value.startswith("upload://"):
            owner, key = parse_upload_uri(value)
            if owner != appkey:
                message = "an upload URI must name this appkey's uploads"
                problems.append({"field": field, "rule": "upload", "message": message})
            elif field not in OUTPUT_FIELDS and _missing_upload(owner, key):
                message = "no such upload in this appkey (POST /uploads returns the URI)"
                problems.append({"field": field, "rule": "upload", "message": message})
    if problems:
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
        raise ValidationError(f"invalid request body: {summary}", details=problems)


def _missing_upload(appkey: str, key: str) -> bool:
    return next(iter(platform_store().list(f"uploads/{appkey}/{key}")), None) is None


class TrainingService:
    def __init__(self, session: Session, appkey: str) -> None:
        self.session = session
        self.appkey = appkey

    # -- create ---------------------------------------------------------------------------

    def create(self, body: TrainingCreate) -> tuple[Training, str]:
        """Validate, resolve the experiment, store CREATE_REQUESTED; the caller dispatches
        the returned training id after commit."""
        catalog = get_catalog()
        validate_training_spec(body, catalog)
        check_uris(body, self.appkey)
        experiment = self._experiment_for(body)
        spec = body.model_dump(mode="json", include=set(SPEC_FIELDS))
        spec["flavor"] = catalog.flavor(body.flavor_id).model_dump(mode="json", by_alias=True)
        spec["image"] = catalog.image(body.image_id).model_dump(mode="json", by_alias=True)
        if body.algorithm_id:
            algorithm = catalog.algorithm(body.algorithm_id)
            spec["algorithm"] = algorithm.model_dump(mode="json", by_alias=True)
        return self._insert(
            body.training_name, body.description, experiment, spec, body.tag_list, body
        )

    def _insert(
        self,
        name: str,
        description: str | None,
        experiment: models.Experiment,
        spec: dict[str, Any],
        tags: Sequence[Any],
        body: TrainingCreate | None = None,
    ) -> tuple[Training, str]:
        training_id = str(uuid.uuid4())
        spec = dict(spec)
        for attr in ("model_upload_uri", "check_point_upload_uri", "log_upload_uri"):
            if spec.get(attr):  # results "under a folder named by the training id"
                spec[attr] = spec[attr].replace(TRAINING_ID_PLACEHOLDER, training_id)
        row = models.Training(
            id=training_id,
            appkey=self.appkey,
            experiment_id=experiment.id,
            name=name,
            description=description,
            spec=spec,
            tags=[t if isinstance(t, dict) else t.model_dump(by_alias=True) for t in tags],
            parent_pipeline_run_id=body.parent_pipeline_run_id if body else None,
            status=str(MACHINE.initial),
        )
        self.session.add(row)
        self.session.flush()
        return to_view(row, experiment.name), row.id

    def _experiment_for(self, body: TrainingCreate) -> models.Experiment:
        if body.experiment_id:
            return get_owned(
                self.session, models.Experiment, self.appkey, body.experiment_id, "experiment"
            )
        if not body.experiment_name:
            raise ValidationError(
                "invalid request body: experimentId: give experimentId or experimentName",
                details=[
                    {
                        "field": "experimentId",
                        "rule": "missing",
                        "message": "give experimentId or experimentName (created if missing)",
                    }
                ],
            )
        model = models.Experiment
        found = self.session.scalars(
            select(model).where(model.appkey == self.appkey, model.name == body.experiment_name)
        ).one_or_none()
        if found is not None:
            return found
        created = experiments.ExperimentService(self.session, self.appkey).create(
            ExperimentCreate(
                experiment_name=body.experiment_name, description=body.experiment_description
            )
        )
        return get_owned(
            self.session, models.Experiment, self.appkey, created.experiment_id, "experiment"
        )

    # -- reads ----------------------------------------------------------------------------

    def get(self, training_id: str) -> Training:
        row = self._row(training_id)
        return to_view(row, self._experiment_names([row.experiment_id]).get(row.experiment_id))

    def list(self, query: TrainingQuery) -> tuple[list[Training], Paging]:
        model = models.Training
        stmt = select(model).where(model.appkey == self.appkey)
        if query.training_id_list:
            stmt = stmt.where(model.id.in_(query.training_id_list))
        if query.training_name_list:
            stmt = stmt.where(model.name.in_(query.training_name_list))
        if query.training_status_code_list:
            stmt = stmt.where(model.status.in_(query.training_status_code_list))
        experiment_ids = list(query.experiment_id_list)
        if query.experiment_id:
            experiment_ids.append(query.experiment_id)
        if experiment_ids:
            stmt = stmt.where(model.experiment_id.in_(experiment_ids))
        stmt = stmt.order_by(model.created_at.desc(), model.id)
        rows, total = page(self.session, stmt, query.page, query.limit)
        names = self._experiment_names({r.experiment_id for r in rows})
        views = [to_view(r, names.get(r.experiment_id)) for r in rows]
        return views, Paging(page=query.page, limit=query.limit, total_count=total)

    def _experiment_names(self, ids: Any) -> dict[str, str]:
        if not ids:
            return {}
        model = models.Experiment
        rows = self.session.execute(select(model.id, model.name).where(model.id.in_(list(ids))))
        return {row.id: row.name for row in rows}

    # -- actions --------------------------------------------------------------------------

    def copy(self, training_id: str, name: str | None) -> tuple[Training, str]:
        source = self._row(training_id)
        experiment = get_owned(
            self.session, models.Experiment, self.appkey, source.experiment_id, "experiment"
        )
        spec = dict(source.spec)
        catalog = get_catalog()
        # The copy runs on today's catalog and storage rules: what was removed since is refused.
        copied = TrainingSpec.model_validate(spec)
        validate_training_spec(copied, catalog)
        check_uris(copied, self.appkey)
        return self._insert(
            name or _copy_name(source.name), source.description, experiment, spec, source.tags
        )

    def stop(self, training_id: str) -> tuple[Training, bool]:
        """Move to STOP_IN_PROGRESS; return the view and whether Ray must be told."""
        row = self._row(training_id)
        if states.is_terminal(MACHINE, row.status):
            raise InvalidTransition(KIND, row.status, str(S.STOP_IN_PROGRESS))
        if row.status == S.STOP_IN_PROGRESS:
            return self.get(training_id), True
        never_dispatched = row.status == S.CREATE_REQUESTED and row.dispatched_at is None
        set_status(self.session, row, MACHINE, S.STOP_IN_PROGRESS, reason="stopped by the user")
        if never_dispatched:
            set_status(
                self.session, row, MACHINE, S.STOPPED, reason="stopped by the user before it ran"
            )
            row.ended_at = utc_now()
        return self.get(training_id), not never_dispatched

    def delete(self, training_id: str) -> None:
        row = self._row(training_id)
        if not states.is_terminal(MACHINE, row.status):
            raise DependentResourceError(
                f"training {row.name} is {row.status}; stop it and delete it when it has ended"
            )
        in_use = {label: count(self.session, row.id) for label, count in DEPENDENTS.items()}
        in_use = {label: n for label, n in in_use.items() if n}
        if in_use:
            listed = ", ".join(f"{n} {label}" for label, n in sorted(in_use.items()))
            raise DependentResourceError(f"training {row.name} is used by {listed}")
        use_log = bool(row.spec.get("use_log"))
        self.session.delete(row)
        monitoring.remove(self.session, training_id)
        store = platform_store()
        store.remove_prefix(f"jobs/{KIND}/{training_id}/")
        if not use_log:  # kept logs are the Log & Crash copy the user asked for
            store.remove_prefix(log_prefix(self.appkey, training_id))
            store.remove(log_meta_key(self.appkey, training_id))

    def _row(self, training_id: str) -> models.Training:
        return get_owned(self.session, models.Training, self.appkey, training_id, KIND)

    @staticmethod
    def require_exists(session: Session, training_id: str) -> None:
        if session.get(models.Training, training_id) is None:
            raise NotFoundError(f"training {training_id[:64]} not found")


def _copy_name(base: str) -> str:
    suffix = "-copy"
    return base[: NAME_MAX_LENGTH - len(suffix)] + suffix


# -- the runner side ----------------------------------------------------------------------


def job_spec(session: Session, training_id: str) -> dict[str, Any]:
    """What the driver needs to run the training (the internal API's answer)."""
    row = session.get(models.Training, training_id)
    if row is None:
        raise NotFoundError(f"training {training_id[:64]} not found")
    settings = get_settings()
    return {
        "trainingId": row.id,
        "trainingName": row.name,
        "appKey": row.appkey,
        "experimentId": row.experiment_id,
        "region": settings.region,
        "status": row.status,
        "spec": row.spec,
        "logPrefix": log_prefix(row.appkey, row.id),
        "logMetaKey": log_meta_key(row.appkey, row.id),
        "resultKey": result_key(row.id),
    }


def report(session: Session, training_id: str, target: str, reason: str | None) -> str:
    """Apply a driver's report: walk the allowed steps to ``target`` (see ``states.path``).

    A report of the status the training already has is a no-op; a report that would leave a
    terminal status raises ``InvalidTransition`` (409) and changes nothing.
    """
    if MACHINE.parse(target) is None:
        known = ", ".join(str(s) for s in MACHINE.statuses)
        raise BadRequestError(f"status {target[:64]} is not a training status; one of {known}")
    row = session.get(models.Training, training_id)
    if row is None:
        raise NotFoundError(f"training {training_id[:64]} not found")
    _advance(session, row, target, reason)
    return row.status


def _advance(session: Session, row: models.Training, target: str, reason: str | None) -> None:
    steps = states.path(MACHINE, row.status, target)
    for step in steps:
        values: dict[str, Any] = {"updated_at": utc_now()}
        if step == S.RUNNING and row.started_at is None:
            values["started_at"] = utc_now()
        if MACHINE.is_terminal(step):
            values["ended_at"] = utc_now()
            if row.started_at is None and step != S.CREATE_FAILED:
                values["started_at"] = values["ended_at"]
        keep_reason = reason if step == steps[-1] else row.status_reason
        set_status(session, row, MACHINE, step, reason=keep_reason, **values)
        session.refresh(row)


# -- dispatch and reconcile ---------------------------------------------------------------


def dispatch(database: Database, training_id: str) -> None:
    """Submit a CREATE_REQUESTED training to Ray; safe to repeat (submission id = id)."""
    with database.session() as session:
        row = session.get(models.Training, training_id)
        if row is None or row.status != S.CREATE_REQUESTED:
            return
        spec, appkey, name = row.spec, row.appkey, row.name
    backend = get_backend()
    flavor = Flavor.model_validate(spec["flavor"])
    instances = int(spec.get("instance_count") or 1)
    problem = capacity_problem(backend.nodes(), flavor, instances)
    if problem:
        with database.session() as session:
            row = session.get(models.Training, training_id)
            if row is not None and row.status == S.CREATE_REQUESTED:
                _advance(session, row, S.CREATE_FAILED, problem)
        return
    settings = get_settings()
    single = instances == 1
    backend.submit(
        JobSubmission(
            submission_id=training_id,
            entrypoint=f"{settings.runner_python} -m runners.training {training_id}",
            env_vars=runner_env(),
            metadata={"kind": KIND, "appkey": appkey, "name": name},
            # One instance: the driver itself holds the flavor and runs the code in place.
            num_cpus=flavor.vcpus if single else 0,
            num_gpus=flavor.gpu_count if single else 0,
            memory_bytes=flavor.ram * 2**20 if single else 0,
        )
    )
    with database.session() as session:
        row = session.get(models.Training, training_id)
        if row is None:
            return
        if row.dispatched_at is None:
            row.dispatched_at = utc_now()
        if row.status == S.CREATE_REQUESTED:
            # The driver's own report may have got there first.
            with contextlib.suppress(StaleStateError, InvalidTransition):
                _advance(session, row, S.CREATE_IN_PROGRESS, None)


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


def read_result(training_id: str) -> dict[str, Any] | None:
    store = platform_store()
    key = result_key(training_id)
    if not store.exists(key):
        return None
    try:
        data: dict[str, Any] = json.loads(store.read(key))
    except (ValueError, NotFoundError):
        return None
    return data


def reconcile(database: Database) -> None:
    """Compare every unsettled training with Ray and settle what only the tick can."""
    with database.session(read_only=True) as session:
        model = models.Training
        pending = session.execute(
            select(model.id, model.status, model.created_at, model.dispatched_at).where(
                model.status.not_in([str(s) for s in MACHINE.terminal])
            )
        ).all()
    if not pending:
        return
    now = utc_now()
    try:
        backend = get_backend()
    except BackendUnavailableError:
        backend = None
    for training_id, status, created_at, dispatched_at in pending:
        try:
            if status == S.CREATE_REQUESTED and dispatched_at is None:
                if now - created_at < NOT_DISPATCHED_GRACE:
                    continue
                if backend is None:
                    _fail_if_stale(database, training_id, created_at, now)
                    continue
                dispatch(database, training_id)
            elif backend is not None:
                _reconcile_one(database, backend, training_id, now)
        except BackendUnavailableError as exc:
            logger.warning("runner backend unavailable", extra={"error": str(exc)})
            _fail_if_stale(database, training_id, created_at, now)
        except (StaleStateError, InvalidTransition):
            continue  # someone else moved it; the next tick looks again


def _fail_if_stale(database: Database, training_id: str, created: datetime, now: datetime) -> None:
    if now - created < UNREACHABLE_LIMIT:
        return
    with database.session() as session:
        row = session.get(models.Training, training_id)
        if row is not None and row.status == S.CREATE_REQUESTED:
            _advance(session, row, S.CREATE_FAILED, "the Ray cluster was unreachable for 10 min")


def _reconcile_one(database: Database, backend: Any, training_id: str, now: datetime) -> None:
    info = backend.info(training_id)
    with database.session() as session:
        row = session.get(models.Training, training_id)
        if row is None or states.is_terminal(MACHINE, row.status):
            return
        if info is None:
            target = S.STOPPED if row.status == S.STOP_IN_PROGRESS else S.FAIL_TRAIN
            _advance(
                session,
                row,
                target,
                f"the Ray cluster no longer knows job {training_id} "
                "(the cluster restarted or the job was removed)",
            )
            return
        if info.status.is_terminal:
            result = read_result(training_id)
            if row.status == S.STOP_IN_PROGRESS:
                # A stop the user asked for wins over an outcome the driver could not report.
                _advance(session, row, S.STOPPED, row.status_reason or "stopped by the user")
            elif result is not None and result.get("status"):
                _advance(session, row, result["status"], result.get("reason"))
            else:
                code = f", exit code {info.exit_code}" if info.exit_code is not None else ""
                _advance(
                    session,
                    row,
                    S.FAIL_TRAIN,
                    f"the job's driver ended ({info.status}{code}) without reporting: "
                    f"{info.message or 'no message from Ray'}",
                )
            return
        if row.status == S.STOP_IN_PROGRESS:
            backend.stop(training_id)  # repeated until Ray says the job ended
            return
        timeout = timedelta(minutes=int(row.spec.get("timeout_minutes") or 43200))
        if row.started_at is not None and now - row.started_at > timeout + TIMEOUT_GRACE:
            backend.stop(training_id)
            minutes = int(timeout.total_seconds() // 60)
            _advance(session, row, S.FAIL_TRAIN, f"exceeded timeout of {minutes} minutes")
        if info.status == JobState.RUNNING and row.status == S.CREATE_REQUESTED:
            _advance(session, row, S.CREATE_IN_PROGRESS, None)
