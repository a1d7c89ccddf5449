"""Models: create from an artifact URI, from a COMPLETE training or tuning, or (HUGGING_FACE)
from a hub model id; list, get, update, delete; the tick checks each new model's artifact
(ACTIVE or CREATE_FAILED), a hub model's repo through the hub (chalicelib/hfhub.py); a hub
model created without a task takes the one its repo's pipeline tag names.

A model only points at its artifact: deleting it leaves the files where they are (a
training's or a tuning's outputs stay theirs). Trainings and tunings refuse deletion while a
model was made from them; later resources (endpoints, batch inferences) register their own
counters in ``DEPENDENTS`` so a model in use is not deleted.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from chalicelib import crypto
from chalicelib.domain import states
from chalicelib.domain.common import Paging, Parameter, utc_now
from chalicelib.domain.model import (
    HUB_MODEL_ID_PARAMETERS,
    HUB_REVISION_PARAMETERS,
    HUGGING_FACE_TASKS,
    TASK_PARAMETER,
    Model,
    ModelCreate,
    ModelFormat,
    ModelQuery,
    ModelUpdate,
    find_parameter,
    hub_model_id_problem,
    hub_revision_problem,
    hub_token,
    hub_uri,
    is_hub_uri,
    is_secret_parameter,
    parse_hub_uri,
)
from chalicelib.errors import (
    DependentResourceError,
    DuplicateNameError,
    StaleStateError,
    ValidationError,
)
from chalicelib.objectstore import check_uri, open_uri, parse_upload_uri
from chalicelib.observability import logger
from chalicelib.services import trainings, tunings
from chalicelib.services.tuning_views import best_trial
from chalicelib.store import models
from chalicelib.store.db import Database
from chalicelib.store.repository import get_owned, page

M = states.ModelStatus
DependentCounter = Callable[[Session, str], int]
DEPENDENTS: dict[str, DependentCounter] = {}  # endpoints, batch inferences register here
IMAGE_FORMATS = {"PYTORCH": ModelFormat.PYTORCH, "TENSORFLOW": ModelFormat.TENSORFLOW}


def _count_from(column: Any) -> DependentCounter:
    def count(session: Session, source_id: str) -> int:
        found = session.scalar(
            select(func.count()).select_from(models.Model).where(column == source_id)
        )
        return int(found or 0)

    return count


trainings.DEPENDENTS["model(s)"] = _count_from(models.Model.training_id)
tunings.DEPENDENTS["model(s)"] = _count_from(models.Model.tuning_id)


def to_view(row: models.Model, source_name: str | None = None) -> Model:
    training = tuning = None
    if row.training_id is not None:
        training = {"training_id": row.training_id, "training_name": source_name}
    if row.tuning_id is not None:
        tuning = {
            "hyperparameter_tuning_id": row.tuning_id,
            "hyperparameter_tuning_name": source_name,
        }
    return Model.model_validate(
        {
            "model_id": row.id,
            "model_name": row.name,
            "description": row.description,
            "model_status_code": row.status,
            "status_reason": row.status_reason,
            "model_format_code": row.format_code,
            "framework_version": row.framework_version,
            "model_upload_uri": row.upload_uri,
            "training": training,
            "hyperparameter_tuning": tuning,
            "trial_number": row.trial_number,
            "parameter_list": [_shown(p) for p in row.parameters],
            "tag_list": row.tags,
            "app_key": row.appkey,
            "created_datetime": row.created_at,
            "updated_datetime": row.updated_at,
        }
    )


def _stored(parameter: Parameter) -> dict[str, str]:
    """A parameter as it is stored: a credential's value encrypted."""
    value = parameter.parameter_value
    if is_secret_parameter(parameter.parameter_name) and value:
        value = crypto.encrypt(value)
    return {"parameterName": parameter.parameter_name, "parameterValue": value}


def _shown(stored: dict[str, str]) -> dict[str, str]:
    value = stored.get("parameterValue", "")
    if crypto.is_encrypted(value):
        value = crypto.MASK
    return {"parameterName": stored["parameterName"], "parameterValue": value}


def runtime_parameters(row: models.Model) -> list[tuple[str, str]]:
    """The model's parameters as its serving runtime gets them (credentials decrypted), for
    the runner that deploys it; never for an API answer or a log."""
    return _decrypted(row.parameters)


def _decrypted(stored: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(p["parameterName"], crypto.decrypt(p.get("parameterValue", ""))) for p in stored]


def _invalid(field: str, rule: str, message: str) -> ValidationError:
    return ValidationError(
        f"invalid {field}: {message}",
        details=[{"field": field, "rule": rule, "message": message}],
    )


def check_source(body: ModelCreate) -> str | None:
    """Exactly one source of the artifact; a URI with its framework; no fine-tunings. The
    ``hf://`` URI of a Hugging Face model made from a hub model id, else None."""
    if body.fine_tuning_id is not None:
        raise _invalid("fineTuningId", "unsupported", "fine-tunings are not offered here")
    given = [
        field
        for field, value in (
            ("modelUploadUri", body.model_upload_uri),
            ("trainingId", body.training_id),
            ("hyperparameterTuningId", body.hyperparameter_tuning_id),
        )
        if value is not None
    ]
    hub_id = _hub_model_id(body)
    if hub_id is not None and given:
        raise _invalid(
            "parameterList",
            "one_source",
            f"give one model source, not {given[0]} and a model_id parameter",
        )
    if hub_id is not None:
        return _hub_source(body, hub_id)
    if not given:
        raise _invalid(
            "modelUploadUri",
            "required",
            "give the model's source: modelUploadUri, trainingId or hyperparameterTuningId",
        )
    if len(given) > 1:
        raise _invalid(given[1], "one_source", f"give one model source, not {' and '.join(given)}")
    if body.model_upload_uri is not None and body.model_format_code is None:
        raise _invalid(
            "modelFormatCode", "required", "a model from modelUploadUri needs its framework"
        )
    return None


def _parameters(body: ModelCreate) -> list[tuple[str, str]]:
    return [(p.parameter_name, p.parameter_value) for p in body.parameter_list or []]


def _hub_model_id(body: ModelCreate) -> str | None:
    """A HUGGING_FACE model's ``model_id`` (``hf_model_id``, ``model-id``) parameter."""
    if body.model_format_code != ModelFormat.HUGGING_FACE:
        return None
    return find_parameter(_parameters(body), HUB_MODEL_ID_PARAMETERS)


def _hub_source(body: ModelCreate, model_id: str) -> str:
    """The checked ``hf://`` URI of a hub model: its id, revision and task parameters (no
    task: the tick takes the one the repo's pipeline tag names)."""
    parameters = _parameters(body)
    problem = hub_model_id_problem(model_id)
    if problem:
        raise _invalid("parameterList", "hub_model_id", problem)
    revision = find_parameter(parameters, HUB_REVISION_PARAMETERS)
    problem = hub_revision_problem(revision) if revision is not None else None
    if problem:
        raise _invalid("parameterList", "hub_revision", problem)
    task = find_parameter(parameters, (TASK_PARAMETER,))
    tasks = ", ".join(HUGGING_FACE_TASKS)
    if task is not None and task not in HUGGING_FACE_TASKS:
        raise _invalid(
            "parameterList", "hub_task", f"task {task[:64]!r} is not served; one of {tasks}"
        )
    return hub_uri(model_id, revision)


class ModelService:
    def __init__(self, session: Session, appkey: str) -> None:
        self.session = session
        self.appkey = appkey

    def create(self, body: ModelCreate) -> Model:
        hub = check_source(body)
        fmt = body.model_format_code
        training_id = tuning_id = trial_number = source_name = None
        if hub is not None:
            uri = hub
        elif body.model_upload_uri is not None:
            uri = body.model_upload_uri
            self._check_uri(uri)
        elif body.training_id is not None:
            training = self._complete_training(body.training_id)
            uri, training_id, source_name = (
                training.spec["model_upload_uri"],
                training.id,
                training.name,
            )
            fmt = fmt or self._format_of(training.spec)
        else:
            assert body.hyperparameter_tuning_id is not None
            tuning = self._complete_tuning(body.hyperparameter_tuning_id)
            best = best_trial(self.session, tuning)
            if best is None:
                raise _invalid(
                    "hyperparameterTuningId",
                    "best_trial",
                    f"hyperparameter tuning {tuning.name} has no successful trial to take "
                    "a model from",
                )
            uri = f"{tuning.spec['model_upload_uri'].rstrip('/')}/trials/{best.number}"
            tuning_id, trial_number, source_name = tuning.id, best.number, tuning.name
            fmt = fmt or self._format_of(tuning.spec)
        row = models.Model(
            id=str(uuid.uuid4()),
            appkey=self.appkey,
            name=body.model_name,
            description=body.description,
            format_code=str(fmt),
            framework_version=body.framework_version,
            upload_uri=uri,
            training_id=training_id,
            tuning_id=tuning_id,
            trial_number=trial_number,
            parameters=[_stored(p) for p in body.parameter_list or []],
            tags=[tag.model_dump(by_alias=True) for tag in body.tag_list],
            parent_pipeline_run_id=body.parent_pipeline_run_id,
            status=str(states.MODEL.initial),
        )
        self.session.add(row)
        try:
            self.session.flush()
        except IntegrityError:
            raise DuplicateNameError(f"a model named {body.model_name} already exists") from None
        return to_view(row, source_name)

    def get(self, model_id: str) -> Model:
        row = self._row(model_id)
        return to_view(row, self._source_name(row))

    def list(self, query: ModelQuery) -> tuple[list[Model], Paging]:
        model = models.Model
        stmt = select(model).where(model.appkey == self.appkey)
        if query.model_id_list:
            stmt = stmt.where(model.id.in_(query.model_id_list))
        if query.model_name_list:
            stmt = stmt.where(model.name.in_(query.model_name_list))
        if query.model_status_code_list:
            stmt = stmt.where(model.status.in_(query.model_status_code_list))
        if query.model_format_code_list:
            stmt = stmt.where(model.format_code.in_(query.model_format_code_list))
        stmt = stmt.order_by(model.created_at.desc(), model.id)
        rows, total = page(self.session, stmt, query.page, query.limit)
        paging = Paging(page=query.page, limit=query.limit, total_count=total)
        return [to_view(row, self._source_name(row)) for row in rows], paging

    def update(self, model_id: str, body: ModelUpdate) -> Model:
        row = self._row(model_id)
        values: dict[str, Any] = {"updated_at": utc_now()}
        if body.model_name is not None and body.model_name != row.name:
            values["name"] = body.model_name
        if body.description is not None:
            values["description"] = body.description
        if body.tag_list is not None:
            values["tags"] = [tag.model_dump(by_alias=True) for tag in body.tag_list]
        model = models.Model
        try:
            result = self.session.execute(
                update(model)
                .where(model.id == row.id, model.version == row.version)
                .values(version=model.version + 1, **values)
                .execution_options(synchronize_session=False)
            )
        except IntegrityError:
            name = values.get("name", row.name)
            raise DuplicateNameError(f"a model named {name} already exists") from None
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise StaleStateError(f"model {model_id} changed concurrently; retry")
        self.session.refresh(row)
        return to_view(row, self._source_name(row))

    def delete(self, model_id: str) -> None:
        """Refused (409) while the model is being created or something uses it; the row
        passes DELETE_IN_PROGRESS and goes in the same transaction (nothing to undeploy)."""
        row = self._row(model_id)
        if row.status in (str(M.CREATE_REQUESTED), str(M.CREATE_IN_PROGRESS)):
            raise DependentResourceError(
                f"model {row.name} is {row.status}; delete it when it is ACTIVE or CREATE_FAILED"
            )
        in_use = {label: count(self.session, row.id) for label, count in DEPENDENTS.items()}
        in_use = {label: n for label, n in in_use.items() if n}
        if in_use:
            listed = ", ".join(f"{n} {label}" for label, n in sorted(in_use.items()))
            raise DependentResourceError(
                f"model {row.name} is used by {listed}; delete them first"
            )
        states.transition(states.MODEL, row.status, M.DELETE_IN_PROGRESS)
        self.session.delete(row)

    # -- helpers -------------------------------------------------------------------------

    def _row(self, model_id: str) -> models.Model:
        return get_owned(self.session, models.Model, self.appkey, model_id, "model")

    def _source_name(self, row: models.Model) -> str | None:
        if row.training_id is not None:
            return self.session.scalar(
                select(models.Training.name).where(models.Training.id == row.training_id)
            )
        if row.tuning_id is not None:
            return self.session.scalar(
                select(models.HyperparameterTuning.name).where(
                    models.HyperparameterTuning.id == row.tuning_id
                )
            )
        return None

    def _check_uri(self, uri: str) -> None:
        check_uri(uri, "modelUploadUri")
        if uri.startswith("upload://") and parse_upload_uri(uri)[0] != self.appkey:
            raise _invalid(
                "modelUploadUri", "upload", "an upload URI must name this appkey's uploads"
            )

    def _complete_training(self, training_id: str) -> models.Training:
        row = get_owned(self.session, models.Training, self.appkey, training_id, "training")
        if row.status != "COMPLETE":
            raise _invalid(
                "trainingId",
                "status",
                f"training {row.name} is {row.status}; a model is made from a COMPLETE one",
            )
        return row

    def _complete_tuning(self, tuning_id: str) -> models.HyperparameterTuning:
        row = get_owned(
            self.session,
            models.HyperparameterTuning,
            self.appkey,
            tuning_id,
            "hyperparameter tuning",
        )
        if row.status != "COMPLETE":
            raise _invalid(
                "hyperparameterTuningId",
                "status",
                f"hyperparameter tuning {row.name} is {row.status}; a model is made from a "
                "COMPLETE one",
            )
        return row

    @staticmethod
    def _format_of(spec: dict[str, Any]) -> ModelFormat:
        image = spec.get("image") or {}
        framework = str(image.get("framework_code") or image.get("frameworkCode") or "")
        found = IMAGE_FORMATS.get(framework.upper())
        if found is None:
            raise _invalid(
                "modelFormatCode",
                "required",
                f"the source's image ({framework or 'unknown framework'}) does not say the "
                "model's framework; give modelFormatCode",
            )
        return found


# -- the tick --------------------------------------------------------------------------------


TASK_NAME = "task"  # the parameter a task taken from the hub is stored as


@dataclass(frozen=True)
class ArtifactCheck:
    """The tick's check of a new model: why its artifact cannot be served (None when it
    can), and the task a hub model created without one takes from its pipeline tag."""

    problem: str | None = None
    found_task: str | None = None


def check_artifact(uri: str, parameters: list[dict[str, str]] | None = None) -> ArtifactCheck:
    """Whether the artifact at ``uri`` can be read (a file or a non-empty folder is there;
    for an ``hf://`` model, the hub serves its safetensors to the model's token, found among
    its stored ``parameters``, and a task is given or named by the repo's pipeline tag).
    Talks to the storage or the hub: run by the tick, not in a request."""
    if is_hub_uri(uri):
        return _hub_check(uri, parameters or [])
    return ArtifactCheck(_storage_problem(uri))


def _storage_problem(uri: str) -> str | None:
    try:
        store, key = open_uri(uri)
        if key and store.exists(key):
            return None
        prefix = f"{key.rstrip('/')}/" if key else ""
        if next(iter(store.list(prefix)), None) is not None:
            return None
    except Exception as exc:  # noqa: BLE001 - any storage failure is the model's reason
        return f"the model artifact could not be read: {type(exc).__name__}: {exc}"[:1000]
    return "the model artifact is missing: nothing at modelUploadUri"


def _hub_check(uri: str, parameters: list[dict[str, str]]) -> ArtifactCheck:
    try:
        model_id, revision = parse_hub_uri(uri)
        plain = _decrypted(parameters)
        token = hub_token(plain)
        # imported here: `import app` loads neither it nor huggingface_hub
        from chalicelib.hfhub import check_hub_model
    except Exception as exc:  # noqa: BLE001 - a bad stored URI or key; no value in the reason
        return ArtifactCheck(f"the Hugging Face model could not be checked: {type(exc).__name__}")
    task = find_parameter(plain, (TASK_PARAMETER,))
    found = check_hub_model(model_id, revision, token, task)
    return ArtifactCheck(found.problem, None if found.problem else found.task)


def reconcile(database: Database) -> None:
    """Check the artifact of every CREATE_REQUESTED model: ACTIVE, or CREATE_FAILED with the
    reason. The claim (CREATE_IN_PROGRESS) is a compare-and-set, so two ticks never check
    one model twice; one left CREATE_IN_PROGRESS by a dead tick is checked again. A task
    taken from the hub joins the model's parameters in the move to ACTIVE (parameters
    never change after the create, so the list read here is still the row's)."""
    model = models.Model
    with database.session(read_only=True) as session:
        pending = session.execute(
            select(model.id, model.upload_uri, model.status, model.parameters).where(
                model.status.in_((str(M.CREATE_REQUESTED), str(M.CREATE_IN_PROGRESS)))
            )
        ).all()
    for model_id, uri, status, parameters in pending:
        if status == str(M.CREATE_REQUESTED) and not _move(
            database, model_id, status, M.CREATE_IN_PROGRESS
        ):
            continue
        check = check_artifact(uri, parameters)
        target = M.CREATE_FAILED if check.problem else M.ACTIVE
        added = None
        if check.found_task is not None:
            task = {"parameterName": TASK_NAME, "parameterValue": check.found_task}
            added = [*(parameters or []), task]
        if _move(database, model_id, str(M.CREATE_IN_PROGRESS), target, check.problem, added):
            logger.info(
                "model checked",
                extra={
                    "modelId": model_id,
                    "status": str(target),
                    "reason": check.problem,
                    "taskFromHub": check.found_task,
                },
            )


def _move(
    database: Database,
    model_id: str,
    current: str,
    target: M,
    reason: str | None = None,
    parameters: list[dict[str, str]] | None = None,
) -> bool:
    """Compare-and-set ``current`` -> ``target`` (``parameters``, when given, replace the
    stored ones in the same update)."""
    states.transition(states.MODEL, current, target)
    model = models.Model
    values: dict[str, Any] = {} if parameters is None else {"parameters": parameters}
    with database.session() as session:
        result = session.execute(
            update(model)
            .where(model.id == model_id, model.status == current)
            .values(
                status=str(target),
                status_reason=reason,
                version=model.version + 1,
                updated_at=utc_now(),
                **values,
            )
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]
