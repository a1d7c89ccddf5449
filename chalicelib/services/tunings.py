"""Hyperparameter tunings: create (validated, template prefill, warm start), dispatch the
tuning driver to the runner pool, follow trials, stop, copy, delete, reconcile.

The driver (``runners.tuning``) draws suggestions from an Optuna study that lives beside the
platform's database (``chalicelib.store.studies``), runs each trial with the training runner
code, and reports the tuning's and each trial's status through the internal API.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pydantic
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from chalicelib.config import get_settings
from chalicelib.domain import states
from chalicelib.domain.catalog import Flavor
from chalicelib.domain.common import NAME_MAX_LENGTH, Paging, utc_now
from chalicelib.domain.monitoring import Monitoring, MonitoringQuery
from chalicelib.domain.training import TrainingSpec
from chalicelib.domain.tuning import (
    HyperparameterTuning,
    HyperparameterTuningCreate,
    HyperparameterTuningQuery,
    HyperparameterTuningSpec,
    Trial,
    TrialQuery,
)
from chalicelib.errors import (
    BadRequestError,
    NotFoundError,
    ValidationError,
)
from chalicelib.objectstore import platform_store
from chalicelib.observability import logger
from chalicelib.services import experiments, jobs, monitoring
from chalicelib.services.catalog import get_catalog
from chalicelib.services.trainings import check_uris, resolve_experiment
from chalicelib.services.tuning_spec import validate_tuning_spec
from chalicelib.services.tuning_views import (
    DETAILS,
    SPEC_FIELDS,
    to_view,
    trial_view,
)
from chalicelib.store import models
from chalicelib.store.db import Database
from chalicelib.store.repository import get_owned, page
from chalicelib.store.studies import delete_study, optuna_storage_url, study_names

KIND = "hyperparameter_tuning"
RUNNER_KIND = "hyperparameter-tuning"
MACHINE = states.HYPERPARAMETER_TUNING
S = states.HyperparameterTuningStatus
T = states.TrialStatus
TRAINING_FIELDS = frozenset(TrainingSpec.model_fields)

DependentCounter = Callable[[Session, str], int]
DEPENDENTS: dict[str, DependentCounter] = {}  # models made from a tuning register here


def _count_tunings(session: Session, experiment_id: str) -> int:
    model = models.HyperparameterTuning
    found = session.scalar(
        select(func.count()).select_from(model).where(model.experiment_id == experiment_id)
    )
    return int(found or 0)


experiments.DEPENDENTS["hyperparameter tuning(s)"] = _count_tunings


def log_prefix(appkey: str, tuning_id: str) -> str:
    return f"logs/{KIND}/{appkey}/{tuning_id}/"


def trial_log_prefix(appkey: str, trial_id: str) -> str:
    return f"logs/trial/{appkey}/{trial_id}/"


def study_name(tuning_id: str) -> str:
    """The name of a tuning's Optuna study (what the driver is told, and what a delete
    removes)."""
    return tuning_id


def _driver_resources(spec: dict[str, Any]) -> tuple[float, float, int]:
    return 0.0, 0.0, 0  # the driver only orchestrates; trials hold the flavor


def _nodes_per_trial(spec: dict[str, Any]) -> int:
    parallel = int(spec.get("parallel_trial_count") or 1)
    return max(1, int(spec.get("instance_count") or 1) // parallel)


def _end_trials(session: Session, row: Any, step: str) -> None:
    """An ended tuning has no running trials: what its driver left unfinished is KILLED."""
    if not states.is_terminal(MACHINE, step):
        return
    now = utc_now()
    session.execute(
        update(models.Trial)
        .where(
            models.Trial.tuning_id == row.id,
            models.Trial.status.in_([str(T.CREATED), str(T.RUNNING)]),
        )
        .values(
            status=str(T.KILLED),
            status_reason=f"the hyperparameter tuning ended {step}",
            ended_at=now,
            updated_at=now,
            version=models.Trial.version + 1,
        )
        .execution_options(synchronize_session=False)
    )


JOB = jobs.JobKind(
    kind=KIND,
    runner_kind=RUNNER_KIND,
    label="hyperparameter tuning",
    model=models.HyperparameterTuning,
    machine=MACHINE,
    fail_status=str(S.FAIL_HYPERPARAMETER_TUNING),
    module="runners.tuning",
    driver_resources=_driver_resources,
    # at least one trial must fit; more run as the cluster frees room
    slots=_nodes_per_trial,
    on_advance=_end_trials,
)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


# -- the user's side -----------------------------------------------------------------------


class TuningService:
    def __init__(self, session: Session, appkey: str) -> None:
        self.session = session
        self.appkey = appkey

    def create(self, body: HyperparameterTuningCreate) -> tuple[HyperparameterTuning, str]:
        body = self._prefill(body)
        catalog = get_catalog()
        validate_tuning_spec(body, catalog)
        check_uris(body, self.appkey)
        if body.warm_start_hyperparameter_tuning_id:
            self._check_warm_start(body)
        experiment = resolve_experiment(self.session, self.appkey, body)
        spec = body.model_dump(mode="json", include=set(SPEC_FIELDS))
        spec["flavor"] = catalog.flavor(body.flavor_id).model_dump(mode="json", by_alias=True)
        spec["image"] = catalog.image(body.image_id).model_dump(mode="json", by_alias=True)
        if body.algorithm_id:
            spec["algorithm"] = catalog.algorithm(body.algorithm_id).model_dump(
                mode="json", by_alias=True
            )
        spec["training_template_id"] = body.training_template_id
        spec["warm_start_hyperparameter_tuning_id"] = body.warm_start_hyperparameter_tuning_id
        spec["hyperparameter_spec_wire"] = [
            s.model_dump(mode="json", by_alias=True, exclude_none=True)
            for s in body.hyperparameter_spec_list
        ]
        return self._insert(
            body.hyperparameter_tuning_name, body.description, experiment, spec, body.tag_list
        )

    def _prefill(self, body: HyperparameterTuningCreate) -> HyperparameterTuningCreate:
        """Fields the body leaves out come from the training template it names; then the
        body must be complete (image, flavor and model output included)."""
        merged = body.model_dump(mode="json", by_alias=False, exclude_unset=True)
        if body.training_template_id:
            template = get_owned(
                self.session,
                models.TrainingTemplate,
                self.appkey,
                body.training_template_id,
                "training template",
            )
            merged = {
                **{k: v for k, v in template.spec.items() if k in TRAINING_FIELDS},
                **merged,
            }
        try:
            return HyperparameterTuningCreate.model_validate(merged)
        except pydantic.ValidationError as exc:
            details = [
                {
                    "field": ".".join(_camel(str(part)) for part in error["loc"]),
                    "rule": str(error["type"]),
                    "message": str(error["msg"]),
                }
                for error in exc.errors(include_url=False, include_input=False)
            ]
            summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
            raise ValidationError(f"invalid request body: {summary}", details=details) from None

    def _check_warm_start(self, body: HyperparameterTuningCreate) -> None:
        source_id = body.warm_start_hyperparameter_tuning_id or ""
        source = self.session.get(models.HyperparameterTuning, source_id)
        problem = None
        if source is None or source.appkey != self.appkey:
            problem = "no such hyperparameter tuning in this appkey"
        elif not states.is_terminal(MACHINE, source.status):
            problem = f"that tuning is {source.status}; warm start from an ended one"
        elif source.spec.get("objective_metric") != body.objective_metric.model_dump(mode="json"):
            problem = "that tuning optimised another objective metric"
        if problem:
            raise ValidationError(
                f"invalid request body: warmStartHyperparameterTuningId: {problem}",
                details=[
                    {
                        "field": "warmStartHyperparameterTuningId",
                        "rule": "warm_start",
                        "message": problem,
                    }
                ],
            )

    def _insert(
        self,
        name: str,
        description: str | None,
        experiment: models.Experiment,
        spec: dict[str, Any],
        tags: Sequence[Any],
    ) -> tuple[HyperparameterTuning, str]:
        row = models.HyperparameterTuning(
            id=str(uuid.uuid4()),
            appkey=self.appkey,
            experiment_id=experiment.id,
            name=name,
            description=description,
            spec=spec,
            tags=[t if isinstance(t, dict) else t.model_dump(by_alias=True) for t in tags],
            status=str(MACHINE.initial),
        )
        self.session.add(row)
        self.session.flush()
        return to_view(self.session, row, experiment.name), row.id

    def get(self, tuning_id: str) -> HyperparameterTuning:
        row = self._row(tuning_id)
        names = self._experiment_names([row.experiment_id])
        return to_view(self.session, row, names.get(row.experiment_id))

    def list(self, query: HyperparameterTuningQuery) -> tuple[list[HyperparameterTuning], Paging]:
        model = models.HyperparameterTuning
        stmt = select(model).where(model.appkey == self.appkey)
        if query.hyperparameter_tuning_id_list:
            stmt = stmt.where(model.id.in_(query.hyperparameter_tuning_id_list))
        if query.hyperparameter_tuning_name_list:
            stmt = stmt.where(model.name.in_(query.hyperparameter_tuning_name_list))
        if query.hyperparameter_tuning_status_code_list:
            stmt = stmt.where(model.status.in_(query.hyperparameter_tuning_status_code_list))
        experiment_ids = list(query.experiment_id_list)
        if query.experiment_id:
            experiment_ids.append(query.experiment_id)
        if experiment_ids:
            stmt = stmt.where(model.experiment_id.in_(experiment_ids))
        rows, total = page(
            self.session, stmt.order_by(model.created_at.desc(), model.id), query.page, query.limit
        )
        names = self._experiment_names({r.experiment_id for r in rows})
        views = [to_view(self.session, r, names.get(r.experiment_id)) for r in rows]
        return views, Paging(page=query.page, limit=query.limit, total_count=total)

    def trials(self, tuning_id: str, query: TrialQuery) -> tuple[Sequence[Trial], Paging]:
        self._row(tuning_id)
        model = models.Trial
        stmt = select(model).where(model.tuning_id == tuning_id)
        if query.trial_status_code_list:
            stmt = stmt.where(model.status.in_([str(s) for s in query.trial_status_code_list]))
        rows, total = page(self.session, stmt.order_by(model.number), query.page, query.limit)
        return [trial_view(r) for r in rows], Paging(
            page=query.page, limit=query.limit, total_count=total
        )

    def _experiment_names(self, ids: Any) -> dict[str, str]:
        if not ids:
            return {}
        model = models.Experiment
        rows = self.session.execute(select(model.id, model.name).where(model.id.in_(list(ids))))
        return {row.id: row.name for row in rows}

    def copy(self, tuning_id: str, name: str | None) -> tuple[HyperparameterTuning, str]:
        source = self._row(tuning_id)
        experiment = get_owned(
            self.session, models.Experiment, self.appkey, source.experiment_id, "experiment"
        )
        spec = dict(source.spec)
        copied = HyperparameterTuningSpec.model_validate(spec)
        validate_tuning_spec(copied, get_catalog())
        check_uris(copied, self.appkey)
        suffix = "-copy"
        new_name = name or source.name[: NAME_MAX_LENGTH - len(suffix)] + suffix
        return self._insert(new_name, source.description, experiment, spec, source.tags)

    def stop(self, tuning_id: str) -> tuple[HyperparameterTuning, bool]:
        """Move to STOP_IN_PROGRESS; return the view and whether Ray must be told."""
        tell_ray = jobs.request_stop(self.session, JOB, self._row(tuning_id))
        return self.get(tuning_id), tell_ray

    def delete(self, tuning_id: str) -> None:
        row = self._row(tuning_id)
        jobs.check_deletable(self.session, JOB, row, DEPENDENTS)
        trial_ids = list(
            self.session.scalars(select(models.Trial.id).where(models.Trial.tuning_id == row.id))
        )
        use_log = bool(row.spec.get("use_log"))
        self.session.delete(row)
        monitoring.remove(self.session, tuning_id)
        store = platform_store()
        store.remove_prefix(f"jobs/{KIND}/{tuning_id}/")
        if not use_log:
            store.remove_prefix(log_prefix(self.appkey, tuning_id))
            for trial_id in trial_ids:
                store.remove_prefix(trial_log_prefix(self.appkey, trial_id))

    def monitoring(self, tuning_id: str, query: MonitoringQuery) -> Monitoring:
        """CPU, memory and GPU of the trials' nodes (``trial{n}-node{rank}``) over time."""
        self._row(tuning_id)
        nodes = monitoring.series(
            self.session, tuning_id, since=query.since, until=query.until, points=query.points
        )
        return Monitoring(resource_id=tuning_id, node_list=nodes)

    def _row(self, tuning_id: str) -> models.HyperparameterTuning:
        return get_owned(
            self.session,
            models.HyperparameterTuning,
            self.appkey,
            tuning_id,
            "hyperparameter tuning",
        )


# -- the driver's side ---------------------------------------------------------------------


def _owned_by_runner(session: Session, tuning_id: str) -> models.HyperparameterTuning:
    row = session.get(models.HyperparameterTuning, tuning_id)
    if row is None:
        raise NotFoundError(f"hyperparameter tuning {tuning_id[:64]} not found")
    return row


def job_spec(session: Session, tuning_id: str) -> dict[str, Any]:
    """What the tuning driver needs (the internal API's answer)."""
    row = _owned_by_runner(session, tuning_id)
    settings = get_settings()
    url, engine_kwargs = optuna_storage_url(settings.database_url)
    trials = session.execute(
        select(models.Trial.id, models.Trial.number, models.Trial.status)
        .where(models.Trial.tuning_id == row.id)
        .order_by(models.Trial.number)
    ).all()
    return {
        "hyperparameterTuningId": row.id,
        "name": row.name,
        "appKey": row.appkey,
        "experimentId": row.experiment_id,
        "region": settings.region,
        "status": row.status,
        "spec": row.spec,
        "hyperparameterSpecList": row.spec.get("hyperparameter_spec_wire", []),
        "nodesPerTrial": _nodes_per_trial(row.spec),
        "optunaStorage": {"url": url, "engineKwargs": engine_kwargs},
        "studyName": study_name(row.id),
        "warmStartStudyName": row.spec.get("warm_start_hyperparameter_tuning_id"),
        "logPrefix": log_prefix(row.appkey, row.id),
        "logMetaKey": f"logs-meta/{KIND}/{row.appkey}/{row.id}.json",
        "resultKey": JOB.result_key(row.id),
        "trials": [{"trialId": t.id, "number": t.number, "status": t.status} for t in trials],
    }


def report(
    session: Session, tuning_id: str, target: str, reason: str | None, detail: str | None
) -> str:
    row = _owned_by_runner(session, tuning_id)
    if MACHINE.parse(target) is None:
        jobs.report(session, JOB, tuning_id, target, reason)  # raises the 400
    if detail and detail not in DETAILS:
        raise BadRequestError(
            f"detail {detail[:64]} is not a status detail; one of {', '.join(sorted(DETAILS))}"
        )
    extra = {"status_detail": detail} if detail else {}
    jobs.advance(session, JOB, row, target, reason, **extra)
    return str(row.status)


def _trial_outputs(spec: dict[str, Any], number: int) -> tuple[str, str | None]:
    model = f"{spec['model_upload_uri'].rstrip('/')}/trials/{number}"
    checkpoint = spec.get("check_point_upload_uri")
    return model, f"{checkpoint.rstrip('/')}/trials/{number}" if checkpoint else None


def upsert_trial(session: Session, tuning_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Create a trial (CREATED) or move it; terminal trial statuses never change."""
    row = _owned_by_runner(session, tuning_id)
    number = int(payload["number"])
    target = str(payload.get("status") or T.CREATED)
    if states.TRIAL.parse(target) is None:
        known = ", ".join(str(s) for s in states.TRIAL.statuses)
        raise BadRequestError(f"status {target[:64]} is not a trial status; one of {known}")
    trial = session.scalars(
        select(models.Trial).where(
            models.Trial.tuning_id == tuning_id, models.Trial.number == number
        )
    ).one_or_none()
    now = utc_now()
    if trial is None:
        trial = models.Trial(
            id=str(uuid.uuid4()),
            tuning_id=tuning_id,
            number=number,
            status=str(T.CREATED),
            params={str(k): str(v) for k, v in (payload.get("params") or {}).items()},
        )
        session.add(trial)
        session.flush()
    for step in states.path(states.TRIAL, trial.status, target):
        trial.status = str(step)
        trial.version += 1
        if step == T.RUNNING and trial.started_at is None:
            trial.started_at = now
        if states.TRIAL.is_terminal(step):
            trial.ended_at = now
            trial.started_at = trial.started_at or now
    if payload.get("reason") is not None:
        trial.status_reason = str(payload["reason"])[:4000]
    if payload.get("metrics") is not None:
        trial.metrics = dict(payload["metrics"])
    if payload.get("objectiveValue") is not None:
        trial.objective_value = float(payload["objectiveValue"])
    trial.updated_at = now
    session.flush()
    model_uri, checkpoint_uri = _trial_outputs(row.spec, number)
    return {
        "trialId": trial.id,
        "status": trial.status,
        "logPrefix": trial_log_prefix(row.appkey, trial.id),
        "modelUploadUri": model_uri,
        "checkPointUploadUri": checkpoint_uri,
    }


def forget_study(tuning_id: str) -> None:
    """Delete the Optuna study of a tuning whose delete has committed; a failure is logged.

    After the commit, not before: a study deleted inside the transaction would be lost if
    the tuning's delete then rolled back. And a failure does not fail the user's delete: the
    tuning is gone either way, and what is left is only storage (a study named by an id
    that is never reused), which :func:`sweep_studies` deletes later.
    """
    try:
        delete_study(get_settings().database_url, study_name(tuning_id))
    except Exception:  # noqa: BLE001 - logged; the tuning's delete stands
        logger.exception(
            "the Optuna study of a deleted hyperparameter tuning was left behind",
            extra={"hyperparameterTuningId": tuning_id},
        )


def delete_orphan_studies(database: Database) -> list[str]:
    """Delete the Optuna studies whose tuning is gone (a delete that could not delete its
    study at once); the names deleted. Only names that are tuning ids are considered."""
    names = [name for name in study_names(database.url) if _is_uuid(name)]
    if not names:
        return []
    with database.session(read_only=True) as session:
        alive = set(
            session.scalars(
                select(models.HyperparameterTuning.id).where(
                    models.HyperparameterTuning.id.in_(names)
                )
            )
        )
    gone = [name for name in names if name not in alive]
    for name in gone:
        delete_study(database.url, name)
        logger.info(
            "deleted the Optuna study of a deleted hyperparameter tuning",
            extra={"hyperparameterTuningId": name},
        )
    return gone


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


SWEEP_SECONDS = 300.0  # how often one process looks for studies left behind
_swept_at: list[float] = []  # this process's last sweep (monotonic), if any


def sweep_studies(database: Database) -> None:
    """The tick's reconciler: :func:`delete_orphan_studies` at most every
    ``SWEEP_SECONDS`` in this process (the embedded platform ticks every second)."""
    now = time.monotonic()
    if _swept_at and now - _swept_at[-1] < SWEEP_SECONDS:
        return
    _swept_at[:] = [now]
    delete_orphan_studies(database)


def dispatch(database: Database, tuning_id: str) -> None:
    jobs.dispatch(database, JOB, tuning_id)


def reconcile(database: Database) -> None:
    jobs.reconcile(database, JOB)


def flavor_of(spec: dict[str, Any]) -> Flavor:
    return Flavor.model_validate(spec["flavor"])
