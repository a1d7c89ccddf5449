"""Copying between storage URIs and local directories: how runners fetch datasets and code
and publish checkpoints and models, whatever the scheme."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from chalicelib.errors import BadRequestError, NotFoundError
from chalicelib.objectstore.base import ObjectStore, PathEscapeError, clean_key, open_uri
from chalicelib.objectstore.s3 import S3Store


class DataLimitError(BadRequestError):
    """A transfer refused because the data is larger than the caller allows."""


def download_uri(uri: str, dest: Path, *, max_bytes: int | None = None) -> int:
    """Copy what ``uri`` names into the directory ``dest``; return the bytes copied.

    A URI naming one object lands as ``dest/<basename>``; otherwise every object under the
    URI (as a directory) lands at its path relative to the URI. Sizes are summed before
    anything is written, so an over-limit download leaves ``dest`` untouched.

    Raises:
        NotFoundError: when no object is at or under ``uri``.
        DataLimitError: when the objects total more than ``max_bytes``.
    """
    store, key = open_uri(uri)
    plan = _plan(store, key)
    if not plan:
        raise NotFoundError(f"nothing to download: no object at or under {uri}")
    total = sum(size for _, _, size in plan)
    if max_bytes is not None and total > max_bytes:
        raise DataLimitError(_over_limit(total, max_bytes, len(plan)))
    dest.mkdir(parents=True, exist_ok=True)
    base = dest.resolve()
    copied = 0
    for object_key, relative, _ in plan:
        target = _target(base, relative)
        store.download_file(object_key, target)
        copied += target.stat().st_size
        if max_bytes is not None and copied > max_bytes:
            # The objects grew after they were listed.
            raise DataLimitError(_over_limit(copied, max_bytes, len(plan)))
    return copied


def upload_dir(src: Path, uri: str) -> list[str]:
    """Upload every regular file below ``src`` under the URI's prefix; return the keys.

    Symlinks (to files or directories) are skipped: following them could publish files
    from outside the directory a job was asked to upload.

    Raises:
        NotFoundError: when ``src`` is not a directory.
    """
    if not src.is_dir():
        raise NotFoundError(f"cannot upload {src}: it is not a directory")
    store, prefix = open_uri(uri)
    written: list[str] = []
    for path in sorted(_regular_files(src)):
        key = _join(prefix, path.relative_to(src).as_posix())
        store.upload_file(path, key)
        written.append(key)
    return written


def _plan(store: ObjectStore, key: str) -> list[tuple[str, str, int]]:
    """(object key, path relative to the destination, size) for everything to copy."""
    if key:
        try:
            return [(key, key.rsplit("/", 1)[-1], store.size(key))]
        except NotFoundError:
            pass  # not one object: a directory-like prefix
    prefix = f"{key}/" if key else ""
    sized: Iterable[tuple[str, int]]
    if isinstance(store, S3Store):
        sized = store.list_with_sizes(prefix)  # one request per 1,000 keys, not one each
    else:
        sized = ((k, store.size(k)) for k in store.list(prefix))
    return [(k, k[len(prefix) :], size) for k, size in sized]


def _target(base: Path, relative: str) -> Path:
    """``base / relative``, refusing anything (odd keys, symlinks in ``base``) that lands
    outside ``base``."""
    if not relative or clean_key(relative) != relative:
        raise PathEscapeError(f"object path {relative!r} cannot be written below the target")
    target = base / relative
    if base not in target.parent.resolve().parents and target.parent.resolve() != base:
        raise PathEscapeError(f"object path {relative!r} leads out of the target directory")
    return target


def _join(prefix: str, relative: str) -> str:
    return f"{prefix.rstrip('/')}/{relative}" if prefix.strip("/") else relative


def _regular_files(src: Path) -> Iterator[Path]:
    for directory, _, names in os.walk(src):  # does not descend into symlinked directories
        for name in names:
            path = Path(directory) / name
            if stat.S_ISREG(path.lstat().st_mode):
                yield path


def _over_limit(total: int, limit: int, count: int) -> str:
    return (
        f"the data is {total:,} bytes in {count:,} objects, over the limit of {limit:,} bytes; "
        "point the URI at less data or raise the limit"
    )
