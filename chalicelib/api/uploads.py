"""``POST /uploads``: a file (a source folder zipped by the CLI, a WML model definition) kept
in the platform's storage for this tenant, and named by an ``upload://`` URI that trainings
accept wherever a source or data URI goes."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Annotated

from pydantic import Field, StringConstraints

from chalicelib.api.envelope import RequestContext, ResourceApi
from chalicelib.domain.common import WireModel
from chalicelib.errors import BadRequestError
from chalicelib.objectstore import platform_store

api = ResourceApi(__name__, "uploads")
MAX_UPLOAD_BYTES = 256 * 2**20
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class UploadQuery(WireModel):
    file_name: Annotated[
        str, StringConstraints(min_length=1, max_length=128, pattern=FILE_NAME.pattern)
    ] = "upload.bin"


class Upload(WireModel):
    upload_id: str
    file_name: str
    uri: str
    size: Annotated[int, Field(ge=0)]
    sha256: str


@api.route(
    "/uploads",
    "POST",
    summary="Upload a file (raw body, at most 256 MiB) for use as an upload:// URI",
    query=UploadQuery,
    response_key="upload",
    response_model=Upload,
    status=201,
)
def create_upload(ctx: RequestContext, query: UploadQuery) -> Upload:
    raw = ctx.request.raw_body or b""
    data = raw.encode() if isinstance(raw, str) else raw
    if not data:
        raise BadRequestError("the request body is the file to upload; it was empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadRequestError(f"an upload is at most {MAX_UPLOAD_BYTES // 2**20} MiB")
    upload_id = uuid.uuid4().hex
    platform_store().write(f"uploads/{ctx.appkey}/{upload_id}/{query.file_name}", data)
    return Upload(
        upload_id=upload_id,
        file_name=query.file_name,
        uri=f"upload://{ctx.appkey}/{upload_id}/{query.file_name}",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
