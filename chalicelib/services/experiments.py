"""Experiments: create (or find by name), list, get, update, delete with dependency checks."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from chalicelib.config import get_settings
from chalicelib.domain import states
from chalicelib.domain.common import Paging, utc_now
from chalicelib.domain.experiment import (
    Experiment,
    ExperimentCreate,
    ExperimentQuery,
    ExperimentUpdate,
)
from chalicelib.errors import DependentResourceError, DuplicateNameError, StaleStateError
from chalicelib.store import models
from chalicelib.store.repository import get_owned, page

# Later resources register "how many of mine use this experiment" counters here, so that
# experiments refuse deletion while trainings, tunings or pipeline runs depend on them.
DependentCounter = Callable[[Session, str], int]
DEPENDENTS: dict[str, DependentCounter] = {}


def to_view(row: Any) -> Experiment:
    """The wire shape of a stored experiment (an ORM object or a Core row: same names)."""
    return Experiment.model_validate(
        {
            "experiment_id": row.id,
            "experiment_name": row.name,
            "description": row.description,
            "experiment_status_code": row.status,
            "status_reason": row.status_reason,
            "tensorboard_access_uri": (
                f"{get_settings().public_url}/tensorboard/experiments/{row.id}/"
            ),
            "tag_list": row.tags,
            "app_key": row.appkey,
            "created_datetime": row.created_at,
            "updated_datetime": row.updated_at,
        }
    )


class ExperimentService:
    def __init__(self, session: Session, appkey: str) -> None:
        self.session = session
        self.appkey = appkey

    def create(self, spec: ExperimentCreate) -> Experiment:
        # No name lookup first: the unique constraint answers at flush (see _flush_unique).
        row = models.Experiment(
            id=str(uuid.uuid4()),
            appkey=self.appkey,
            name=spec.experiment_name,
            description=spec.description,
            tags=[tag.model_dump(by_alias=True) for tag in spec.tag_list],
            parent_pipeline_run_id=spec.parent_pipeline_run_id,
            # Nothing to provision: CREATE_REQUESTED -> ACTIVE happens inside this transaction,
            # so the row is written once, in its checked target status.
            status=str(states.transition(states.EXPERIMENT, states.EXPERIMENT.initial, "ACTIVE")),
        )
        self.session.add(row)
        self._flush_unique(spec.experiment_name)
        return to_view(row)

    def get(self, experiment_id: str) -> Experiment:
        return to_view(self._row(experiment_id))

    def list(self, query: ExperimentQuery) -> tuple[list[Experiment], Paging]:
        # Core rows, not ORM objects: a page is read-only and 100 of them are the hot path.
        stmt = select(models.Experiment.__table__).where(models.Experiment.appkey == self.appkey)
        if query.experiment_id_list:
            stmt = stmt.where(models.Experiment.id.in_(query.experiment_id_list))
        if query.experiment_name_list:
            stmt = stmt.where(models.Experiment.name.in_(query.experiment_name_list))
        if query.experiment_status_code_list:
            stmt = stmt.where(models.Experiment.status.in_(query.experiment_status_code_list))
        stmt = stmt.order_by(models.Experiment.created_at.desc(), models.Experiment.id)
        rows, total = page(self.session, stmt, query.page, query.limit, entities=False)
        paging = Paging(page=query.page, limit=query.limit, total_count=total)
        return [to_view(row) for row in rows], paging

    def update(self, experiment_id: str, spec: ExperimentUpdate) -> Experiment:
        row = self._row(experiment_id)
        values: dict[str, Any] = {"updated_at": utc_now()}
        if spec.experiment_name is not None and spec.experiment_name != row.name:
            self._ensure_name_free(spec.experiment_name)
            values["name"] = spec.experiment_name
        if spec.description is not None:
            values["description"] = spec.description
        if spec.tag_list is not None:
            values["tags"] = [tag.model_dump(by_alias=True) for tag in spec.tag_list]
        # Compare-and-set on the version read above: a concurrent update is never overwritten.
        model = models.Experiment
        try:
            result = self.session.execute(
                update(model)
                .where(model.id == row.id, model.version == row.version)
                .values(version=model.version + 1, **values)
                .execution_options(synchronize_session=False)
            )
        except IntegrityError:
            name = values.get("name", row.name)
            raise DuplicateNameError(f"an experiment named {name} already exists") from None
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise StaleStateError(f"experiment {experiment_id} changed concurrently; retry")
        self.session.refresh(row)
        return to_view(row)

    def delete(self, experiment_id: str) -> None:
        row = self._row(experiment_id)
        if row.status in (
            str(states.ExperimentStatus.CREATE_REQUESTED),
            str(states.ExperimentStatus.CREATE_IN_PROGRESS),
        ):
            raise DependentResourceError(
                f"experiment {experiment_id} is being created; delete it when it is ACTIVE"
            )
        in_use = {label: count(self.session, row.id) for label, count in DEPENDENTS.items()}
        in_use = {label: n for label, n in in_use.items() if n}
        if in_use:
            listed = ", ".join(f"{n} {label}" for label, n in sorted(in_use.items()))
            raise DependentResourceError(
                f"experiment {row.name} still has {listed}; delete them first"
            )
        self.session.delete(row)

    def _row(self, experiment_id: str) -> models.Experiment:
        return get_owned(self.session, models.Experiment, self.appkey, experiment_id, "experiment")

    def _ensure_name_free(self, name: str) -> None:
        taken = self.session.scalar(
            select(models.Experiment.id).where(
                models.Experiment.appkey == self.appkey, models.Experiment.name == name
            )
        )
        if taken is not None:
            raise DuplicateNameError(f"an experiment named {name} already exists ({taken})")

    def _flush_unique(self, name: str) -> None:
        try:
            self.session.flush()
        except IntegrityError:
            raise DuplicateNameError(f"an experiment named {name} already exists") from None
