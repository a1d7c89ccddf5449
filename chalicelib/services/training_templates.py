"""Training templates: saved training specifications, validated like a training create."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from chalicelib.domain.common import NAME_MAX_LENGTH, Paging, Tag, utc_now
from chalicelib.domain.training import (
    TrainingSpec,
    TrainingTemplate,
    TrainingTemplateCreate,
    TrainingTemplateQuery,
)
from chalicelib.errors import DuplicateNameError
from chalicelib.services.catalog import get_catalog
from chalicelib.services.training_spec import validate_training_spec
from chalicelib.store import models
from chalicelib.store.repository import get_owned, page

SPEC_FIELDS = frozenset(TrainingSpec.model_fields)


def to_view(row: models.TrainingTemplate) -> TrainingTemplate:
    return TrainingTemplate(
        **row.spec,
        training_template_id=row.id,
        training_template_name=row.name,
        description=row.description,
        tag_list=[Tag.model_validate(tag) for tag in row.tags],
        app_key=row.appkey,
        created_datetime=row.created_at,
        updated_datetime=row.updated_at,
    )


def _spec_of(body: TrainingTemplateCreate) -> dict[str, Any]:
    return body.model_dump(mode="json", include=set(SPEC_FIELDS))


class TrainingTemplateService:
    def __init__(self, session: Session, appkey: str) -> None:
        self.session = session
        self.appkey = appkey

    def create(self, body: TrainingTemplateCreate) -> TrainingTemplate:
        validate_training_spec(body, get_catalog())
        row = models.TrainingTemplate(
            id=str(uuid.uuid4()),
            appkey=self.appkey,
            name=body.training_template_name,
            description=body.description,
            spec=_spec_of(body),
            tags=[tag.model_dump(by_alias=True) for tag in body.tag_list],
        )
        self.session.add(row)
        self._flush_unique(row.name)
        return to_view(row)

    def get(self, template_id: str) -> TrainingTemplate:
        return to_view(self._row(template_id))

    def list(self, query: TrainingTemplateQuery) -> tuple[list[TrainingTemplate], Paging]:
        model = models.TrainingTemplate
        stmt = select(model).where(model.appkey == self.appkey)
        if query.training_template_id_list:
            stmt = stmt.where(model.id.in_(query.training_template_id_list))
        if query.training_template_name_list:
            stmt = stmt.where(model.name.in_(query.training_template_name_list))
        stmt = stmt.order_by(model.created_at.desc(), model.id)
        rows, total = page(self.session, stmt, query.page, query.limit)
        return [to_view(r) for r in rows], Paging(
            page=query.page, limit=query.limit, total_count=total
        )

    def update(self, template_id: str, body: TrainingTemplateCreate) -> TrainingTemplate:
        """Replace the template's specification, name, description and tags."""
        row = self._row(template_id)
        validate_training_spec(body, get_catalog())
        if body.training_template_name != row.name:
            self._ensure_name_free(body.training_template_name)
        row.name = body.training_template_name
        row.description = body.description
        row.spec = _spec_of(body)
        row.tags = [tag.model_dump(by_alias=True) for tag in body.tag_list]
        row.updated_at = utc_now()
        self._flush_unique(row.name)
        return to_view(row)

    def copy(self, template_id: str, name: str | None) -> TrainingTemplate:
        source = self._row(template_id)
        new_name = name or self._copy_name(source.name)
        self._ensure_name_free(new_name)
        row = models.TrainingTemplate(
            id=str(uuid.uuid4()),
            appkey=self.appkey,
            name=new_name,
            description=source.description,
            spec=dict(source.spec),
            tags=list(source.tags),
        )
        self.session.add(row)
        self._flush_unique(new_name)
        return to_view(row)

    def delete(self, template_id: str) -> None:
        self.session.delete(self._row(template_id))

    def _copy_name(self, base: str) -> str:
        for n in range(1, 1000):
            suffix = "-copy" if n == 1 else f"-copy-{n}"
            candidate = base[: NAME_MAX_LENGTH - len(suffix)] + suffix
            if not self._name_taken(candidate):
                return candidate
        raise DuplicateNameError(f"no free copy name for {base}; give trainingTemplateName")

    def _row(self, template_id: str) -> models.TrainingTemplate:
        return get_owned(
            self.session, models.TrainingTemplate, self.appkey, template_id, "training template"
        )

    def _name_taken(self, name: str) -> bool:
        model = models.TrainingTemplate
        found = self.session.scalar(
            select(model.id).where(model.appkey == self.appkey, model.name == name)
        )
        return found is not None

    def _ensure_name_free(self, name: str) -> None:
        if self._name_taken(name):
            raise DuplicateNameError(f"a training template named {name} already exists")

    def _flush_unique(self, name: str) -> None:
        try:
            self.session.flush()
        except IntegrityError:
            raise DuplicateNameError(f"a training template named {name} already exists") from None
