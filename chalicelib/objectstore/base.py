"""The object-store interface and the registry that picks a backend by URI scheme."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from chalicelib.errors import BadRequestError


class ObjectStore(Protocol):
    """Blobs addressed by key inside one root (a directory, a bucket, a container).

    Keys are relative, '/'-separated paths. Implementations must refuse keys that would
    escape the root (``..`` segments, absolute paths) with ``PathEscapeError``.
    """

    def read(self, key: str) -> bytes:
        """Return the whole object.

        Raises:
            NotFoundError: when no object has this key.
        """
        ...

    def write(self, key: str, data: bytes) -> None:
        """Create or replace the object atomically (readers see the old or the new bytes)."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object has exactly this key."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key starting with ``prefix``, in lexicographic order."""
        ...

    def remove(self, key: str) -> None:
        """Delete the object; deleting a missing key is not an error."""
        ...

    def remove_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; return how many were removed."""
        ...

    def size(self, key: str) -> int:
        """The object's length in bytes, without reading it (transfers check limits first).

        Raises:
            NotFoundError: when no object has this key.
        """
        ...

    def download_file(self, key: str, path: Path) -> None:
        """Stream the object into the local file ``path`` (parents created, file replaced).

        Streams rather than ``read`` so that datasets larger than memory can be fetched; a
        failed download leaves no partial file at ``path``.

        Raises:
            NotFoundError: when no object has this key.
        """
        ...

    def upload_file(self, path: Path, key: str) -> None:
        """Stream the local file ``path`` into the object ``key`` (created or replaced)."""
        ...


class PathEscapeError(BadRequestError):
    result_code = 40003


StoreFactory = Callable[[str], tuple[ObjectStore, str]]
_FACTORIES: dict[str, StoreFactory] = {}


def register_scheme(scheme: str, factory: StoreFactory) -> None:
    """Make ``scheme://`` URIs open with ``factory(uri) -> (store, key prefix)``."""
    _FACTORIES[scheme] = factory


def open_uri(uri: str) -> tuple[ObjectStore, str]:
    """The store for ``uri`` and the key prefix inside it."""
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    factory = _FACTORIES.get(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in sorted(_FACTORIES))
        raise BadRequestError(
            f"no object store for {scheme or 'a URI without scheme'}; use {known}"
        )
    return factory(uri)


def clean_key(key: str) -> str:
    """Normalize a key and refuse anything that could leave the store's root."""
    parts = [p for p in key.replace("\\", "/").split("/") if p not in ("", ".")]
    if key.startswith("/") or any(p == ".." for p in parts) or "\x00" in key:
        raise PathEscapeError(f"object key {key!r} must be relative and must not contain '..'")
    return "/".join(parts)
