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

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from chalicelib.config import get_settings
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
    NotFoundError,
    ValidationError,
)
from chalicelib.objectstore import check_uri, parse_upload_uri, platform_store
from chalicelib.services import experiments, jobs, monitoring
from chalicelib.services.catalog import get_catalog
from chalicelib.services.training_spec import validate_training_spec
from chalicelib.store import models
from chalicelib.store.db import Database
from chalicelib.store.repository import get_owned, page

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
NOT_DISPATCHED_GRACE = jobs.NOT_DISPATCHED_GRACE
UNREACHABLE_LIMIT = jobs.UNREACHABLE_LIMIT
TIMEOUT_GRACE = jobs.TIMEOUT_GRACE
capacity_problem = jobs.capacity_problem
runner_env = jobs.runner_env

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
    return f"jobs/{KIND}/{training_id}/result.json"  # = JOB.result_key


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


def resolve_experiment(session: Session, appkey: str, body: Any) -> models.Experiment:
    """The body's experiment: ``experimentId``, or ``experimentName`` (created if missing)."""
    if body.experiment_id:
        return get_owned(session, models.Experiment, appkey, body.experiment_id, "experiment")
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
    found = session.scalars(
        select(model).where(model.appkey == appkey, model.name == body.experiment_name)
    ).one_or_none()
    if found is not None:
        return found
    created = experiments.ExperimentService(session, appkey).create(
        ExperimentCreate(
            experiment_name=body.experiment_name, description=body.experiment_description
        )
    )
    return get_owned(session, models.Experiment, appkey, created.experiment_id, "experiment")


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
        experiment = resolve_experiment(self.session, self.appkey, body)
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
        tell_ray = jobs.request_stop(self.session, JOB, self._row(training_id))
        return self.get(training_id), tell_ray

    def delete(self, training_id: str) -> None:
        row = self._row(training_id)
        jobs.check_deletable(self.session, JOB, row, DEPENDENTS)
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


def _driver_resources(spec: dict[str, Any]) -> tuple[float, float, int]:
    """One instance: the driver itself holds the flavor and runs the code in place."""
    if int(spec.get("instance_count") or 1) > 1:
        return 0.0, 0.0, 0
    flavor = Flavor.model_validate(spec["flavor"])
    return float(flavor.vcpus), float(flavor.gpu_count), flavor.ram * 2**20


JOB = jobs.JobKind(
    kind=KIND,
    runner_kind="training",
    label="training",
    model=models.Training,
    machine=MACHINE,
    fail_status=str(S.FAIL_TRAIN),
    module="runners.training",
    driver_resources=_driver_resources,
    slots=lambda spec: int(spec.get("instance_count") or 1),
)


def report(session: Session, training_id: str, target: str, reason: str | None) -> str:
    """Apply a driver's report (see ``jobs.report``); returns the status now held."""
    row = jobs.report(session, JOB, training_id, target, reason)
    return str(row.status)


def _advance(session: Session, row: models.Training, target: str, reason: str | None) -> None:
    jobs.advance(session, JOB, row, target, reason)


def dispatch(database: Database, training_id: str) -> None:
    """Submit a CREATE_REQUESTED training to Ray; safe to repeat (submission id = id)."""
    jobs.dispatch(database, JOB, training_id)


def read_result(training_id: str) -> dict[str, Any] | None:
    return jobs.read_result(JOB, training_id)


def reconcile(database: Database) -> None:
    """Compare every unsettled training with Ray and settle what only the tick can."""
    jobs.reconcile(database, JOB)
