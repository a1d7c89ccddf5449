"""``nas://{id}:/{path}``: NAS shares mounted on this host, looked up in
``OPENMAKER_NAS_ROOTS``; and the file store both NAS and ``file://`` URIs open."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from chalicelib.config import get_settings
from chalicelib.errors import BadRequestError
from chalicelib.objectstore.base import ObjectStore, PathEscapeError, clean_key
from chalicelib.objectstore.local import LocalFileStore

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SHAPE = "nas://{NAS ID}:/{path}"


class MountedFileStore(LocalFileStore):
    """A ``LocalFileStore`` over a large tree (a NAS mount, a home directory).

    Its root is the whole mount, so every key, including ones a runner appends to the URI's
    prefix, is held inside the mount; listing walks only the prefix's directory instead of
    the whole mount.
    """

    def list(self, prefix: str = "") -> Iterator[str]:
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        try:
            self._path(head)  # refuses a prefix whose directory leaves the root
            base = self.root / clean_key(head)
        except PathEscapeError:
            return iter(())
        if not base.is_dir():
            return iter(())
        keys = (
            path.relative_to(self.root).as_posix()
            for path in base.rglob("*")
            if path.is_file() and not path.name.startswith(".tmp-")
        )
        return iter(sorted(k for k in keys if k.startswith(prefix)))


def _malformed(message: str, rule: str = "format") -> BadRequestError:
    return BadRequestError(message, details=[{"rule": rule, "message": message}])


def parse_nas_uri(uri: str) -> tuple[str, str]:
    """``nas://{id}:/{path}`` as (NAS id, clean path inside the share); no file access."""
    rest = uri[len("nas://") :] if uri.startswith("nas://") else ""
    nas_id, colon, path = rest.partition(":")
    if not nas_id or not colon or not path.startswith("/"):
        raise _malformed(f"a nas URI must name the NAS and an absolute path: {_SHAPE}")
    try:
        return nas_id, clean_key(path.lstrip("/"))
    except PathEscapeError:
        message = "the path of a nas:// URI must not contain '..' segments"
        raise PathEscapeError(message, details=[{"rule": "format", "message": message}]) from None


def nas_root(nas_id: str) -> Path:
    """The mount point configured for ``nas_id``.

    Raises:
        BadRequestError: (rule ``nas_id``) when this host has no mount for it.
    """
    roots = get_settings().nas_roots
    root = roots.get(nas_id)
    if root is None:
        name = nas_id if _SAFE_ID.match(nas_id) else "with this id"
        configured = ", ".join(sorted(roots)) or "none"
        raise _malformed(
            f"NAS {name} is not mounted here; configured: {configured} "
            "(OPENMAKER_NAS_ROOTS, as id=/mount/point,...)",
            rule="nas_id",
        )
    return root


def open_nas_uri(uri: str) -> tuple[ObjectStore, str]:
    """The store rooted at the NAS mount and the path inside it as key prefix."""
    nas_id, path = parse_nas_uri(uri)
    root = nas_root(nas_id)
    if not root.is_dir():
        # Writing anyway would fill the local disk under an empty mount point.
        raise _malformed(
            f"NAS {nas_id} is configured at {root}, but no directory is there; "
            "mount the share or fix OPENMAKER_NAS_ROOTS",
            rule="nas_id",
        )
    return MountedFileStore(root), path
