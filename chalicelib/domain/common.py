"""Field types and limits shared by every resource: the console guide's rules as pydantic types."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
)
from pydantic.alias_generators import to_camel

MAX_TAGS = 10
MAX_HYPERPARAMETERS = 100
MAX_DATASETS = 10
STORAGE_STEP_GB = 10
STORAGE_MAX_GB = 2040
NAME_MAX_LENGTH = 50
DESCRIPTION_MAX_LENGTH = 255

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are ignored (SDK extras)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        protected_namespaces=(),
    )


ResourceName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=NAME_MAX_LENGTH, pattern=NAME_PATTERN),
    Field(
        description=(
            f"1-{NAME_MAX_LENGTH} characters: letters, digits, '-' and '_', "
            "starting with a letter or digit"
        )
    ),
]
Description = Annotated[str, StringConstraints(max_length=DESCRIPTION_MAX_LENGTH)]


def _check_storage_size(value: int) -> int:
    if value % STORAGE_STEP_GB:
        raise ValueError(f"must be a multiple of {STORAGE_STEP_GB} GB")
    return value


StorageSizeGb = Annotated[
    int,
    Field(ge=STORAGE_STEP_GB, le=STORAGE_MAX_GB, description="GB, in 10 GB steps up to 2,040"),
    AfterValidator(_check_storage_size),
]

_URI_RULES: dict[str, re.Pattern[str]] = {
    "file": re.compile(r"^file:///.+"),
    "nas": re.compile(r"^nas://[A-Za-z0-9_-]+:/.*"),
    "s3": re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"),
    "obs": re.compile(r"^obs://[^/\s]+/[^/\s]+(/.*)?$"),
    "upload": re.compile(r"^upload://[A-Za-z0-9_-]+/[^/\s]+(/.*)?$"),
}


def _check_storage_uri(value: str) -> str:
    scheme = value.split("://", 1)[0] if "://" in value else ""
    rule = _URI_RULES.get(scheme)
    if rule is None:
        raise ValueError("scheme must be one of file://, nas://, s3://, obs://, upload://")
    if not rule.match(value) or any(ch.isspace() for ch in value):
        shapes = {
            "file": "file:///{absolute path}",
            "nas": "nas://{NAS ID}:/{path}",
            "s3": "s3://{bucket}/{path}",
            "obs": "obs://{endpoint}/{container}/{path}",
            "upload": "upload://{appkey}/{uploadId}/{file}",
        }
        raise ValueError(f"must look like {shapes[scheme]}")
    if "/../" in value + "/" or value.endswith("/.."):
        raise ValueError("must not contain '..' segments")
    return value


StorageUri = Annotated[
    str,
    StringConstraints(min_length=1, max_length=1024),
    AfterValidator(_check_storage_uri),
    Field(
        description=(
            "file:///path, nas://{id}:/{path}, s3://bucket/path, obs://host/container/path "
            "or upload://{appkey}/{uploadId}/{file}"
        ),
        # documented for clients; enforced, with a clearer message, by _check_storage_uri
        json_schema_extra={
            "pattern": r"^(file:///|nas://[A-Za-z0-9_-]+:/|s3://|obs://|upload://)\S+$"
        },
    ),
]


def _scalar_to_str(value: Any) -> Any:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return value


ParameterValue = Annotated[
    str, BeforeValidator(_scalar_to_str), StringConstraints(max_length=4096)
]
ParameterName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$"),
]


class Tag(WireModel):
    tag_key: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    tag_value: Annotated[str, StringConstraints(max_length=255)] = ""


TagList = Annotated[list[Tag], Field(max_length=MAX_TAGS, description="at most 10 tags")]


def _unique_tag_keys(tags: list[Tag]) -> list[Tag]:
    keys = [tag.tag_key for tag in tags]
    if len(keys) != len(set(keys)):
        raise ValueError("tag keys must be unique")
    return tags


UniqueTagList = Annotated[TagList, AfterValidator(_unique_tag_keys)]


class Parameter(WireModel):
    parameter_name: ParameterName
    parameter_value: ParameterValue = ""


def utc_now() -> datetime:
    """Naive UTC, the form stored in the database (portable across SQLite and PostgreSQL)."""
    return datetime.now(UTC).replace(tzinfo=None)


def _format_datetime(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "+00:00"


WireDatetime = Annotated[datetime, PlainSerializer(_format_datetime, return_type=str)]


class Paging(WireModel):
    page: int
    limit: int
    total_count: int


class ListQuery(WireModel):
    page: Annotated[int, Field(ge=1, le=100_000)] = 1
    limit: Annotated[int, Field(ge=1, le=1000)] = 1000
