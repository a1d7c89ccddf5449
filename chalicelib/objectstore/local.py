"""Object storage on the local file system: the embedded default under $OPENMAKER_HOME."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from chalicelib.errors import NotFoundError
from chalicelib.objectstore.base import PathEscapeError, clean_key


class LocalFileStore:
    """Keys are files below ``root``; writes go through a temporary file and a rename."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / clean_key(key)).resolve()
        if path != self.root and self.root not in path.parents:
            raise PathEscapeError(f"object key {key!r} leaves the store")
        return path

    def read(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise NotFoundError(f"object {key} not found")
        return path.read_bytes()

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        # Walk only the folder the prefix lies in, not the whole root.
        folder = prefix if prefix.endswith("/") else prefix.rpartition("/")[0]
        start = self._path(folder) if folder.strip("/") else self.root
        if not start.is_dir():
            return iter(())
        keys = (
            p.relative_to(self.root).as_posix()
            for p in start.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )
        return iter(sorted(k for k in keys if k.startswith(prefix)))

    def remove(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def remove_prefix(self, prefix: str) -> int:
        doomed = list(self.list(prefix))
        for key in doomed:
            self.remove(key)
        base = self._path(prefix) if prefix.strip("/") else None
        if base is not None and base.is_dir() and not any(base.rglob("*")):
            shutil.rmtree(base, ignore_errors=True)
        return len(doomed)

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise NotFoundError(f"object {key} not found")
        return path.stat().st_size

    def download_file(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise NotFoundError(f"object {key} not found")
        _copy_atomically(source, path)

    def upload_file(self, path: Path, key: str) -> None:
        _copy_atomically(path, self._path(key))


def _copy_atomically(source: Path, target: Path) -> None:
    """Copy in chunks through a temporary file beside ``target`` so that readers never see
    a half-written file and a failure leaves nothing behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle, source.open("rb") as src:
            shutil.copyfileobj(src, handle, 1024 * 1024)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
