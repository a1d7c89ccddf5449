"""Extracting user-supplied zip archives (code bundles, datasets) without letting them write
outside the destination, plant symlinks, or fill the disk."""

from __future__ import annotations

import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from chalicelib.errors import BadRequestError, NotFoundError

MiB = 1024 * 1024
GiB = 1024 * MiB
# Deflate reaches ~1000:1 only on degenerate data; real files stay far below 200:1.
MAX_RATIO = 200
RATIO_MIN_SIZE = MiB
_CHUNK = MiB
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafeArchiveError(BadRequestError):
    """An archive refused before (or while) extracting it; names the entry and the rule."""

    def __init__(self, entry: str, rule: str, message: str) -> None:
        shown = entry if len(entry) <= 200 else entry[:200] + "..."
        super().__init__(
            f"archive entry {shown!r} refused ({rule}): {message}",
            details=[{"entry": shown, "rule": rule, "message": message}],
        )
        self.entry = entry
        self.rule = rule


@dataclass(frozen=True)
class _Entry:
    info: zipfile.ZipInfo
    path: str  # clean, relative, '/'-separated
    is_dir: bool


def safe_extract_zip(
    zip_path: Path,
    dest: Path,
    *,
    max_total_bytes: int = 2 * GiB,
    max_files: int = 10_000,
) -> list[str]:
    """Extract ``zip_path`` into ``dest``; return the relative paths of the files written.

    Every entry is checked before anything is written, and entries are extracted into a
    staging directory first, so a refused archive leaves ``dest`` as it was.

    Raises:
        UnsafeArchiveError: rule ``parent_segment``, ``absolute_path``, ``symlink``,
            ``special_file``, ``encrypted``, ``duplicate``, ``path_conflict``, ``max_files``,
            ``max_total_bytes``, ``compression_ratio``, ``declared_size``, ``corrupt``,
            ``compression`` or ``format``.
        NotFoundError: when ``zip_path`` does not exist.
    """
    if not zip_path.is_file():
        raise NotFoundError(f"archive {zip_path.name} not found")
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise UnsafeArchiveError(zip_path.name, "format", f"not a zip archive ({exc})") from exc
    with archive:
        entries = _validate(archive.infolist(), max_total_bytes, max_files)
        return _extract(archive, entries, dest)


def _validate(infos: list[zipfile.ZipInfo], max_total_bytes: int, max_files: int) -> list[_Entry]:
    if len(infos) > max_files:
        raise UnsafeArchiveError(
            f"{len(infos)} entries", "max_files", f"more than {max_files:,} entries"
        )
    entries: list[_Entry] = []
    files: set[str] = set()
    dirs: set[str] = set()
    total = 0
    for info in infos:
        entry = _entry(info)
        if entry is None:
            continue
        if entry.is_dir:
            dirs.add(entry.path)
        else:
            if entry.path in files:
                raise UnsafeArchiveError(info.filename, "duplicate", "appears twice")
            files.add(entry.path)
            total += info.file_size
            _check_size(info, total, max_total_bytes)
        entries.append(entry)
    for entry in entries:
        parents = entry.path.split("/")[:-1]
        for depth in range(1, len(parents) + 1):
            if "/".join(parents[:depth]) in files:
                raise UnsafeArchiveError(
                    entry.info.filename, "path_conflict", "lies below an entry that is a file"
                )
        if entry.is_dir and entry.path in files:
            raise UnsafeArchiveError(entry.info.filename, "path_conflict", "is a file and a dir")
    return entries


def _entry(info: zipfile.ZipInfo) -> _Entry | None:
    """The entry's clean path and kind, or None for a no-op directory such as ``./``."""
    name = info.filename
    unified = name.replace("\\", "/")  # Windows tools write backslash separators
    if unified.startswith("/") or _DRIVE.match(unified):
        raise UnsafeArchiveError(name, "absolute_path", "paths must be relative")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(name, "parent_segment", "paths must not contain '..'")
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise UnsafeArchiveError(name, "symlink", "symbolic links are not extracted")
    is_dir = unified.endswith("/") or kind == stat.S_IFDIR
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UnsafeArchiveError(name, "special_file", "only files and directories")
    if info.flag_bits & 0x1:
        raise UnsafeArchiveError(name, "encrypted", "encrypted entries are not supported")
    if not parts:
        if is_dir:
            return None
        raise UnsafeArchiveError(name, "absolute_path", "a file entry needs a name")
    return _Entry(info=info, path="/".join(parts), is_dir=is_dir)


def _check_size(info: zipfile.ZipInfo, total: int, max_total_bytes: int) -> None:
    if total > max_total_bytes:
        raise UnsafeArchiveError(
            info.filename,
            "max_total_bytes",
            f"the files would total more than {max_total_bytes:,} bytes",
        )
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > RATIO_MIN_SIZE and ratio > MAX_RATIO:
        raise UnsafeArchiveError(
            info.filename,
            "compression_ratio",
            f"compressed {ratio:,.0f}:1, over {MAX_RATIO}:1 (a decompression bomb)",
        )


def _extract(archive: zipfile.ZipFile, entries: list[_Entry], dest: Path) -> list[str]:
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    base = dest.resolve()
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=base))
    try:
        for entry in entries:
            staged = staging / entry.path
            if entry.is_dir:
                staged.mkdir(parents=True, exist_ok=True)
            else:
                staged.parent.mkdir(parents=True, exist_ok=True)
                _copy_entry(archive, entry, staged)
        return _publish(staging, base, entries)
    except BaseException:
        if created:
            shutil.rmtree(base, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _copy_entry(archive: zipfile.ZipFile, entry: _Entry, target: Path) -> None:
    """Copy in chunks, counting bytes: a header that understates the size cannot make us
    write more than it declared."""
    declared = entry.info.file_size
    written = 0
    try:
        with archive.open(entry.info) as source, target.open("xb") as out:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                if written > declared:
                    raise UnsafeArchiveError(
                        entry.info.filename, "declared_size", f"holds more than {declared:,} bytes"
                    )
                out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise UnsafeArchiveError(
            entry.info.filename, "corrupt", f"the data does not match its header ({exc})"
        ) from exc
    except NotImplementedError as exc:
        raise UnsafeArchiveError(entry.info.filename, "compression", str(exc)) from exc
    if written != declared:
        raise UnsafeArchiveError(
            entry.info.filename, "declared_size", f"holds {written:,} bytes, not {declared:,}"
        )


def _publish(staging: Path, base: Path, entries: list[_Entry]) -> list[str]:
    """Move staged entries into place, after checking that none would land outside ``base``
    through a symlink already in the destination or replace a directory."""
    for entry in entries:
        final = base / entry.path
        parent = final.parent.resolve()
        if parent != base and base not in parent.parents:
            raise UnsafeArchiveError(
                entry.info.filename, "symlink", "the destination holds a link out of it"
            )
        if not entry.is_dir and final.is_dir() and not final.is_symlink():
            raise UnsafeArchiveError(
                entry.info.filename, "path_conflict", "a directory is in the way"
            )
        for ancestor in final.parents:
            if ancestor == base:
                break
            if ancestor.exists() and not ancestor.is_dir():
                raise UnsafeArchiveError(
                    entry.info.filename, "path_conflict", "a file is in the way"
                )
    written: list[str] = []
    for entry in entries:
        final = base / entry.path
        if entry.is_dir:
            final.mkdir(parents=True, exist_ok=True)
            continue
        final.parent.mkdir(parents=True, exist_ok=True)
        (staging / entry.path).replace(final)
        written.append(entry.path)
    return written
