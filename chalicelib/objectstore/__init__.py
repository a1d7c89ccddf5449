"""Object storage chosen by URI scheme.

``open_uri(uri)`` returns a store and a clean key prefix inside it for:

- ``file:///path``: the local file system, only below ``OPENMAKER_FILE_ROOTS``;
- ``nas://{id}:/path``: a NAS share mounted at ``OPENMAKER_NAS_ROOTS[id]``;
- ``s3://bucket/path``: S3 at ``OPENMAKER_S3_ENDPOINT_URL`` (AWS when unset);
- ``obs://{host[:port]}/{container}/path``: NHN Cloud Object Storage's S3-compatible API.

``check_uri`` is the API's cheap check of the same rules (no network, no writes).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from chalicelib.config import get_settings
from chalicelib.errors import BadRequestError, ValidationError
from chalicelib.objectstore.base import (
    ObjectStore,
    PathEscapeError,
    clean_key,
    open_uri,
    register_scheme,
)
from chalicelib.objectstore.local import LocalFileStore
from chalicelib.objectstore.nas import MountedFileStore, nas_root, open_nas_uri, parse_nas_uri
from chalicelib.objectstore.s3 import (
    S3Store,
    open_obs_uri,
    open_s3_uri,
    parse_obs_uri,
    parse_s3_uri,
)


def _refuse_path(message: str) -> PathEscapeError:
    return PathEscapeError(message, details=[{"rule": "allowed_roots", "message": message}])


def allowed_file_path(uri: str) -> tuple[Path, Path]:
    """The configured root holding a ``file://`` URI's path, and the path resolved.

    Symlinks are followed first, so a link inside a root that points outside it is refused.

    Raises:
        PathEscapeError: (rule ``allowed_roots``) when no root holds the path.
    """
    raw = uri[len("file://") :] if uri.startswith("file://") else uri
    if "\x00" in raw:
        raise _refuse_path("a file URI must not contain NUL characters")
    path = Path("/" + raw.lstrip("/")).resolve()
    roots = [root.expanduser().resolve() for root in get_settings().file_roots]
    for root in roots:
        if path == root or root in path.parents:
            return root, path
    if not roots:
        raise _refuse_path("file:// URIs are disabled here: OPENMAKER_FILE_ROOTS is empty")
    allowed = ", ".join(str(root) for root in roots)
    raise _refuse_path(
        f"a file URI must name a path below {allowed}; use one of them or ask the operator "
        "to add the directory to OPENMAKER_FILE_ROOTS"
    )


def _open_file_uri(uri: str) -> tuple[ObjectStore, str]:
    root, path = allowed_file_path(uri)
    return MountedFileStore(root), clean_key(path.relative_to(root).as_posix())


def _check_nas(uri: str) -> Any:
    return nas_root(parse_nas_uri(uri)[0])


def parse_upload_uri(uri: str) -> tuple[str, str]:
    """``upload://{appkey}/{uploadId}[/{file}]`` (a file sent to ``POST /uploads``) as the
    tenant and the key below ``uploads/{appkey}/`` in the platform store."""
    rest = uri[len("upload://") :]
    appkey, _, key = rest.partition("/")
    if not appkey or not key or not _UPLOAD_SEGMENT.match(appkey):
        raise BadRequestError(
            "an upload URI is upload://{appkey}/{uploadId}/{file}, as POST /uploads returned it",
            details=[{"rule": "format"}],
        )
    try:
        return appkey, clean_key(key)
    except PathEscapeError as exc:
        raise BadRequestError(exc.message, details=[{"rule": "format"}]) from None


def _open_upload_uri(uri: str) -> tuple[ObjectStore, str]:
    appkey, key = parse_upload_uri(uri)
    return platform_store(), f"uploads/{appkey}/{key}"


_UPLOAD_SEGMENT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

_CHECKS: dict[str, Callable[[str], Any]] = {
    "file": allowed_file_path,
    "nas": _check_nas,
    "s3": parse_s3_uri,
    "obs": parse_obs_uri,
    "upload": parse_upload_uri,
}


def check_uri(uri: str, field: str) -> None:
    """Refuse a storage URI this deployment cannot use, before anything is stored.

    Checks the scheme, that a ``file://`` path lies below ``OPENMAKER_FILE_ROOTS`` (after
    following symlinks), that a NAS id is configured, and the shape of s3/obs URIs. It never
    touches the network. The URI is not echoed: it may carry a secret.

    Raises:
        ValidationError: with ``details=[{field, rule, message}]``; rule is one of
            ``scheme``, ``allowed_roots``, ``nas_id`` or ``format``.
    """
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    check = _CHECKS.get(scheme)
    if check is None:
        known = ", ".join(f"{s}://" for s in _CHECKS)
        _invalid(field, "scheme", f"the URI scheme must be one of {known}")
    else:
        try:
            check(uri)
        except BadRequestError as exc:
            default = "allowed_roots" if scheme == "file" else "format"
            rule = str(exc.details[0].get("rule", default)) if exc.details else default
            _invalid(field, rule, exc.message)


def _invalid(field: str, rule: str, message: str) -> NoReturn:
    raise ValidationError(
        f"invalid {field}: {message}",
        details=[{"field": field, "rule": rule, "message": message}],
    )


def platform_store() -> LocalFileStore:
    """The platform's own storage (logs, artifacts) under ``OPENMAKER_STORAGE_ROOT``."""
    root = get_settings().storage_root
    root.mkdir(parents=True, exist_ok=True)
    return LocalFileStore(root)


register_scheme("file", _open_file_uri)
register_scheme("nas", open_nas_uri)
register_scheme("s3", open_s3_uri)
register_scheme("obs", open_obs_uri)
register_scheme("upload", _open_upload_uri)

__all__ = [
    "LocalFileStore",
    "MountedFileStore",
    "ObjectStore",
    "PathEscapeError",
    "S3Store",
    "check_uri",
    "open_uri",
    "parse_upload_uri",
    "platform_store",
    "register_scheme",
]
