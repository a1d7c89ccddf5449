"""Durable job logs, reader side: page, follow and search the JSONL chunks jobs write.

Layout (shared with ``runners.logsink``)::

    logs/{category}/{appkey}/{resource_id}/{source}/{seq:08d}.jsonl

Each chunk line is ``{"time", "level", "stream", "source", "line", "body"}``; per source,
``seq`` and ``line`` start at 0 and grow, and chunk ``seq + 1`` starts right after the last
line of chunk ``seq``. Everything here streams chunk by chunk: at most one chunk per source
(plus, for searches, the page window) is held in memory.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple

from chalicelib.domain.common import WireDatetime, WireModel
from chalicelib.errors import BadRequestError
from chalicelib.objectstore.base import ObjectStore

LEVELS = ("INFO", "WARNING", "ERROR")
MAX_LIMIT = 1000
# Searches keep the newest page * limit matches in memory; deeper pages must narrow the search
MAX_SEARCH_WINDOW = 10_000
# Per source, chunk times only grow, except for clock steps; a search for lines since T stops
# reading a source's older chunks once a whole chunk is older than T by more than this
CLOCK_SKEW = timedelta(minutes=5)

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CHUNK = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)/(\d{8})\.jsonl$")
_BAD_CURSOR = "cursor is not one this API returned"


class LogRecord(WireModel):
    """One line a job's process printed."""

    time: WireDatetime
    level: str
    stream: str
    source: str
    line: int
    body: str
    resource_id: str | None = None
    category: str | None = None
    # easymaker.inference lines (the seed's endpoint log fields)
    endpoint_id: str | None = None
    endpoint_stage_id: str | None = None
    inference_id: str | None = None
    action: str | None = None
    model_name: str | None = None


class _Entry(NamedTuple):
    """A parsed record; tuple order is the merge order within one resource."""

    time: datetime
    source: str
    line: int
    level: str
    stream: str
    body: str

    def record(self, resource_id: str | None = None, category: str | None = None) -> LogRecord:
        return LogRecord(
            time=self.time,
            level=self.level,
            stream=self.stream,
            source=self.source,
            line=self.line,
            body=self.body,
            resource_id=resource_id,
            category=category,
        )


@dataclass(frozen=True)
class _Chunk:
    key: str
    seq: int


def log_prefix(category: str, appkey: str, resource_id: str) -> str:
    """``logs/{category}/{appkey}/{resource_id}/``: where one resource's jobs write logs."""
    for name, value in (("category", category), ("appkey", appkey), ("resource id", resource_id)):
        _check_segment(name, value)
    return f"logs/{category}/{appkey}/{resource_id}/"


def _check_segment(name: str, value: str) -> None:
    if not _SEGMENT.match(value):
        raise BadRequestError(f"{name} {value!r} is not a valid log path segment")


def _check_window(page: int, limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequestError(f"limit must be between 1 and {MAX_LIMIT}")
    if page < 1:
        raise BadRequestError("page must be 1 or more")


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


# -- chunks ---------------------------------------------------------------------------------


def _norm_prefix(prefix: str) -> str:
    cleaned = prefix.strip("/")
    if not cleaned:
        raise BadRequestError("a log prefix must not be empty")
    return cleaned + "/"


def _sources(store: ObjectStore, prefix: str) -> dict[str, list[_Chunk]]:
    """Source name -> its chunks in seq order, from one listing of ``prefix``."""
    found: dict[str, list[_Chunk]] = {}
    for key in store.list(prefix):
        match = _CHUNK.match(key[len(prefix) :])
        if match:
            found.setdefault(match.group(1), []).append(_Chunk(key, int(match.group(2))))
    for chunks in found.values():
        chunks.sort(key=lambda chunk: chunk.seq)
    return dict(sorted(found.items()))


def _resources(store: ObjectStore, prefix: str) -> dict[str, dict[str, list[_Chunk]]]:
    """Resource id -> source -> chunks, from one listing of ``logs/{category}/{appkey}/``."""
    grouped: dict[str, dict[str, list[_Chunk]]] = {}
    for key in store.list(prefix):
        resource_id, _, rest = key[len(prefix) :].partition("/")
        match = _CHUNK.match(rest)
        if match and _SEGMENT.match(resource_id):
            sources = grouped.setdefault(resource_id, {})
            sources.setdefault(match.group(1), []).append(_Chunk(key, int(match.group(2))))
    for sources in grouped.values():
        for chunks in sources.values():
            chunks.sort(key=lambda chunk: chunk.seq)
    return grouped


def _read_chunk(store: ObjectStore, chunk: _Chunk, source: str) -> list[_Entry]:
    """The chunk's records; lines that are not records are skipped, not fatal."""
    entries: list[_Entry] = []
    for raw in store.read(chunk.key).splitlines():
        try:
            item = json.loads(raw)
            entry = _Entry(
                _naive_utc(datetime.fromisoformat(item["time"])),
                source,  # the folder, not the record, names the source the cursor tracks
                item["line"],
                item["level"],
                item["stream"],
                item["body"],
            )
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(entry.line, int) and isinstance(entry.body, str):
            entries.append(entry)
    return entries


class _Reader:
    """Reads a source's chunks, remembering the last one (probes often reread it)."""

    def __init__(self, store: ObjectStore, source: str, chunks: list[_Chunk]) -> None:
        self.store = store
        self.source = source
        self.chunks = chunks
        self._cached: tuple[int, list[_Entry]] | None = None

    def entries(self, index: int) -> list[_Entry]:
        if self._cached is None or self._cached[0] != index:
            self._cached = (index, _read_chunk(self.store, self.chunks[index], self.source))
        return self._cached[1]

    def first_line(self, index: int) -> int | None:
        entries = self.entries(index)
        return entries[0].line if entries else None

    def locate(self, line: int) -> int:
        """Index of the last chunk whose first line is at most ``line`` (0 if none)."""
        last = len(self.chunks) - 1
        if line <= 0 or last <= 0:
            return 0
        first = self.first_line(last)  # following a live job: the cursor is in the last chunk
        if first is not None and first <= line:
            return last
        lo, hi = 0, last - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            first = self.first_line(mid)
            # an unreadable chunk counts as "after": we then read more, never skip lines
            if first is not None and first <= line:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def forward(self, line: int = 0) -> Iterator[_Entry]:
        """Records with line numbers from ``line`` on, oldest first."""
        if not self.chunks:
            return
        for index in range(self.locate(line), len(self.chunks)):
            for entry in self.entries(index):
                if entry.line >= line:
                    yield entry

    def backward(self) -> Iterator[_Entry]:
        """Every record, newest first."""
        for index in range(len(self.chunks) - 1, -1, -1):
            yield from reversed(self.entries(index))

    def count(self) -> int:
        """Lines of the source: numbered contiguously, so first and last chunk tell."""
        if not self.chunks:
            return 0
        first = next(iter(self.entries(0)), None)
        last = next(reversed(self.entries(len(self.chunks) - 1)), None)
        if first is None or last is None:
            return sum(1 for _ in self.forward())
        return max(0, last.line - first.line + 1)


# -- cursor ---------------------------------------------------------------------------------


def encode_cursor(positions: dict[str, int]) -> str:
    """urlsafe base64 (unpadded) of the JSON ``{source: next line number}``."""
    raw = json.dumps(dict(sorted(positions.items())), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str | None) -> dict[str, int]:
    if cursor is None:
        return {}
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        positions = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequestError(_BAD_CURSOR) from exc
    if not isinstance(positions, dict) or not all(
        isinstance(source, str)
        and _SEGMENT.match(source)
        and type(line) is int  # bool is an int subclass but not a line number
        and line >= 0
        for source, line in positions.items()
    ):
        raise BadRequestError(_BAD_CURSOR)
    return positions


# -- public API -----------------------------------------------------------------------------


def read_logs(
    store: ObjectStore,
    prefix: str,
    *,
    cursor: str | None,
    limit: int,
    source: str | None = None,
) -> tuple[list[LogRecord], str]:
    """Up to ``limit`` records after ``cursor`` (oldest first) and the cursor to continue with.

    Sources merge by (time, source, line). The cursor holds the next line number of each
    source, so a chunk that lands late for one source is still delivered, once, next call.
    """
    _check_window(1, limit)
    positions = decode_cursor(cursor)
    prefix = _norm_prefix(prefix)
    if source is not None:
        _check_segment("source", source)
    readers = [
        _Reader(store, name, chunks)
        for name, chunks in _sources(store, prefix).items()
        if source is None or name == source
    ]
    merged = heapq.merge(*(reader.forward(positions.get(reader.source, 0)) for reader in readers))
    records: list[LogRecord] = []
    for entry in merged:
        records.append(entry.record())
        positions[entry.source] = entry.line + 1
        if len(records) >= limit:
            break
    return records, encode_cursor(positions)


def page_logs(
    store: ObjectStore,
    prefix: str,
    *,
    page: int,
    limit: int,
    source: str | None = None,
    order: Literal["asc", "desc"] = "asc",
) -> tuple[list[LogRecord], int]:
    """Page ``page`` (from 1) of ``limit`` records, oldest (asc) or newest (desc) first."""
    _check_window(page, limit)
    if order not in ("asc", "desc"):
        raise BadRequestError("order must be asc or desc")
    prefix = _norm_prefix(prefix)
    if source is not None:
        _check_segment("source", source)
    readers = [
        _Reader(store, name, chunks)
        for name, chunks in _sources(store, prefix).items()
        if source is None or name == source
    ]
    total = sum(reader.count() for reader in readers)
    offset = (page - 1) * limit
    if offset >= total:
        return [], total
    if order == "asc":
        merged = heapq.merge(*(reader.forward() for reader in readers))
    else:
        merged = heapq.merge(*(reader.backward() for reader in readers), reverse=True)
    records = [entry.record() for entry in _slice(merged, offset, limit)]
    return records, total


def _slice(entries: Iterable[_Entry], offset: int, limit: int) -> Iterator[_Entry]:
    for index, entry in enumerate(entries):
        if index >= offset + limit:
            return
        if index >= offset:
            yield entry


class _Hit(NamedTuple):
    """Search order: newest first, then resource, source and line (all descending)."""

    time: datetime
    resource_id: str
    source: str
    line: int
    entry: _Entry


@dataclass(frozen=True)
class _Filter:
    level: str | None
    since: datetime | None
    until: datetime | None
    needle: str | None

    def matches(self, entry: _Entry) -> bool:
        return (
            (self.level is None or entry.level == self.level)
            and (self.since is None or entry.time >= self.since)
            and (self.until is None or entry.time < self.until)
            and (self.needle is None or self.needle in entry.body.casefold())
        )

    def older_than_since(self, entries: list[_Entry]) -> bool:
        """Whether a whole chunk predates ``since`` by more than any plausible clock step."""
        return (
            self.since is not None
            and bool(entries)
            and max(entry.time for entry in entries) < self.since - CLOCK_SKEW
        )


def search_logs(
    store: ObjectStore,
    appkey: str,
    category: str,
    *,
    resource_ids: list[str] | None,
    level: str | None,
    since: datetime | None,
    until: datetime | None,
    text: str | None,
    page: int,
    limit: int,
) -> tuple[list[LogRecord], int]:
    """Records of ``category`` across the tenant's resources, newest first, and their total.

    Filters: ``resource_ids`` (when given), ``level`` (exact), ``since`` (inclusive),
    ``until`` (exclusive), ``text`` (case-insensitive substring of the body).
    """
    _check_window(page, limit)
    window = page * limit
    if window > MAX_SEARCH_WINDOW:
        raise BadRequestError(
            f"page * limit must be at most {MAX_SEARCH_WINDOW}; narrow the search "
            "with since, until, level or text"
        )
    _check_segment("category", category)
    _check_segment("appkey", appkey)
    wanted_level = level.upper() if level else None
    if wanted_level is not None and wanted_level not in LEVELS:
        raise BadRequestError(f"level must be one of {', '.join(LEVELS)}")
    wanted = _Filter(
        level=wanted_level,
        since=_naive_utc(since) if since is not None else None,
        until=_naive_utc(until) if until is not None else None,
        needle=text.casefold() if text else None,
    )

    base = f"logs/{category}/{appkey}/"
    if resource_ids is None:
        resources = _resources(store, base)
    else:
        resources = {}
        for resource_id in dict.fromkeys(resource_ids):
            _check_segment("resource id", resource_id)
            sources = _sources(store, f"{base}{resource_id}/")
            if sources:
                resources[resource_id] = sources

    kept: list[_Hit] = []  # min-heap of the newest ``window`` hits
    total = 0
    for resource_id, sources in sorted(resources.items()):
        for name, chunks in sources.items():
            reader = _Reader(store, name, chunks)
            for index in range(len(chunks) - 1, -1, -1):
                entries = reader.entries(index)
                for entry in entries:
                    if not wanted.matches(entry):
                        continue
                    total += 1
                    hit = _Hit(entry.time, resource_id, entry.source, entry.line, entry)
                    if len(kept) < window:
                        heapq.heappush(kept, hit)
                    elif hit > kept[0]:
                        heapq.heapreplace(kept, hit)
                if wanted.older_than_since(entries):
                    break  # this source's older chunks are older still
    newest_first = sorted(kept, reverse=True)[(page - 1) * limit :]
    return [
        hit.entry.record(resource_id=hit.resource_id, category=category)
        for hit in newest_first[:limit]
    ], total
