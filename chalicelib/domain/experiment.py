"""Experiment request and response shapes."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from chalicelib.domain.common import (
    Description,
    ListQuery,
    ResourceName,
    Tag,
    UniqueTagList,
    WireDatetime,
    WireModel,
)


class ExperimentCreate(WireModel):
    experiment_name: ResourceName
    description: Description | None = None
    tag_list: UniqueTagList = []
    parent_pipeline_run_id: Annotated[str, Field(max_length=36)] | None = None


class ExperimentUpdate(WireModel):
    experiment_name: ResourceName | None = None
    description: Description | None = None
    tag_list: UniqueTagList | None = None


class ExperimentQuery(ListQuery):
    experiment_id_list: list[str] = []
    experiment_name_list: list[str] = []
    experiment_status_code_list: list[str] = []


class Experiment(WireModel):
    experiment_id: str
    experiment_name: str
    description: str | None
    experiment_status_code: str
    status_reason: str | None = None
    tensorboard_access_uri: str | None = None
    tag_list: list[Tag]
    app_key: str
    created_datetime: WireDatetime
    updated_datetime: WireDatetime
