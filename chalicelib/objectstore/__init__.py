"""Object storage chosen by URI scheme: ``file://`` (and the platform's own local storage)
today; ``nas://``, ``s3://`` and ``obs://`` register here as the job runner needs them."""

from __future__ import annotations

from pathlib import Path

from chalicelib.config import get_settings
from chalicelib.objectstore.base import ObjectStore, PathEscapeError, open_uri, register_scheme
from chalicelib.objectstore.local import LocalFileStore


def _file_store(uri: str) -> tuple[ObjectStore, str]:
    return LocalFileStore(Path("/")), uri[len("file://") :].lstrip("/")


def platform_store() -> LocalFileStore:
    """The platform's own storage (logs, artifacts) under ``OPENMAKER_STORAGE_ROOT``."""
    root = get_settings().storage_root
    root.mkdir(parents=True, exist_ok=True)
    return LocalFileStore(root)


register_scheme("file", _file_store)

__all__ = [
    "LocalFileStore",
    "ObjectStore",
    "PathEscapeError",
    "open_uri",
    "platform_store",
    "register_scheme",
]
