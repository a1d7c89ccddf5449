"""Durable job logs, writer side: every line a job's processes print, as JSONL chunks.

A :class:`LogSink` turns the stdout/stderr text of a job's processes into records and writes
them, one chunk object per source per flush, below a key prefix the API shares::

    logs/{category}/{appkey}/{resource_id}/{source}/{seq:08d}.jsonl

Each chunk line is one JSON record ``{"time", "level", "stream", "source", "line", "body"}``;
``line`` counts from 0 per source, ``seq`` from 0 per source, both continuing after a restart
of the writer. Chunks are written whole through ``ObjectStore.write``, so readers never see
half a chunk; a failed write keeps its records for the next flush.
"""

from __future__ import annotations

import codecs
import json
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO

from chalicelib.objectstore.base import ObjectStore

MAX_LINE_BYTES = 16 * 1024
TAIL_KEEP = 1000
STREAMS = ("stdout", "stderr")
CHUNK_NAME = re.compile(r"^(\d{8})\.jsonl$")
SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

_ERROR_WORD = re.compile(r"\b(?:ERROR|CRITICAL|FATAL|Traceback)\b")
_EXCEPTION_LINE = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Interrupt)(?::\s|:?$)"
)
_WARNING_WORD = re.compile(r"\bWARN(?:ING)?\b|\b[A-Z]\w*Warning: ")
# A traceback, or the line chaining a second one to it, starts an ERROR block
_TRACEBACK_STARTS = (
    "Traceback (most recent call last):",
    "During handling of the above exception",
    "The above exception was the direct cause",
)


def _utc_clock() -> datetime:
    return datetime.now(UTC)


def _format_time(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "+00:00"


def classify(body: str) -> str:
    """The level of one line on its own: ERROR, WARNING or INFO."""
    if _ERROR_WORD.search(body) or body.startswith("Error") or _EXCEPTION_LINE.match(body):
        return "ERROR"
    if _WARNING_WORD.search(body):
        return "WARNING"
    return "INFO"


def split_long(line: str, limit: int = MAX_LINE_BYTES) -> list[str]:
    """``line`` cut into pieces of at most ``limit`` UTF-8 bytes, never inside a character."""
    if len(line) * 4 <= limit:
        return [line]
    data = line.encode("utf-8")
    if len(data) <= limit:
        return [line]
    pieces: list[str] = []
    pos = 0
    while pos < len(data):
        end = min(pos + limit, len(data))
        while end < len(data) and end > pos + 1 and (data[end] & 0xC0) == 0x80:
            end -= 1
        pieces.append(data[pos:end].decode("utf-8"))
        pos = end
    return pieces


def _warn(message: str) -> None:
    try:
        sys.stderr.write(f"logsink: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed: nowhere left to complain
        pass


@dataclass
class _Source:
    """What one source still owes the store."""

    name: str
    # (time, level, stream, body), not yet numbered: numbering waits for the resume point
    waiting: list[tuple[str, str, str, str]] = field(default_factory=list)
    # numbered and serialized lines; only the flushing thread touches them
    encoded: list[bytes] = field(default_factory=list)
    next_seq: int | None = None
    next_line: int = 0


class LogSink:
    """Buffers log lines per source and writes them to ``store`` below ``prefix``.

    ``write`` is thread-safe and never does I/O; a daemon thread flushes every
    ``flush_interval`` seconds. Call :meth:`close` when the processes are done: it writes the
    unterminated last lines and everything still buffered.
    """

    def __init__(
        self,
        store: ObjectStore,
        prefix: str,
        *,
        flush_interval: float = 1.0,
        max_chunk_bytes: int = 256 * 1024,
        clock: Callable[[], datetime] = _utc_clock,
    ) -> None:
        if not prefix.strip("/"):
            raise ValueError("a log sink needs a non-empty key prefix")
        if flush_interval <= 0 or max_chunk_bytes <= 0:
            raise ValueError("flush_interval and max_chunk_bytes must be positive")
        self.store = store
        self.prefix = prefix.strip("/") + "/"
        self.flush_interval = flush_interval
        self.max_chunk_bytes = max_chunk_bytes
        self.clock = clock
        self._lock = threading.Lock()  # guards sources, partial lines, tail, closed
        self._flush_lock = threading.Lock()  # one flush at a time, so seq stays in order
        self._sources: dict[str, _Source] = {}
        self._partial: dict[tuple[str, str], str] = {}
        self._in_traceback: set[tuple[str, str]] = set()
        self._tail: deque[str] = deque(maxlen=TAIL_KEEP)
        self._closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="logsink-flush", daemon=True)
        self._thread.start()

    # -- writing -------------------------------------------------------------------------

    def write(self, source: str, stream: str, text: str | bytes) -> None:
        """Add ``text`` printed by ``source`` on ``stream``; a trailing partial line waits."""
        if not SOURCE_NAME.match(source):
            raise ValueError(f"log source {source!r} must match {SOURCE_NAME.pattern}")
        if stream not in STREAMS:
            raise ValueError(f"log stream must be one of {', '.join(STREAMS)}")
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        elif not text.isascii():
            text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates
        if not text:
            return
        key = (source, stream)
        with self._lock:
            buffered = self._partial.pop(key, "") + text
            *lines, rest = buffered.split("\n")
            for line in lines:
                self._emit_locked(key, line.removesuffix("\r"))
            if rest:
                pieces = split_long(rest)
                for piece in pieces[:-1]:
                    self._emit_locked(key, piece)
                self._partial[key] = pieces[-1]
            closed = self._closed
        if closed:
            self.end_stream(source, stream)
            self.flush()

    def end_stream(self, source: str, stream: str) -> None:
        """``source`` will print nothing more on ``stream``: its partial line is a line."""
        key = (source, stream)
        with self._lock:
            rest = self._partial.pop(key, None)
            if rest:
                self._emit_locked(key, rest.removesuffix("\r"))

    def _emit_locked(self, key: tuple[str, str], line: str) -> None:
        source_name, stream = key
        stamp = _format_time(self.clock())
        for body in split_long(line):
            level = self._level_locked(key, body)
            source = self._sources.get(source_name)
            if source is None:
                source = self._sources[source_name] = _Source(source_name)
            source.waiting.append((stamp, level, stream, body))
            self._tail.append(body)

    def _level_locked(self, key: tuple[str, str], body: str) -> str:
        """Lines of a Python traceback are all ERROR, up to and with the exception line."""
        if key in self._in_traceback:
            if body.startswith((" ", "\t")):
                return "ERROR"
            self._in_traceback.discard(key)
            if _EXCEPTION_LINE.match(body):
                return "ERROR"
        if body.startswith(_TRACEBACK_STARTS):
            self._in_traceback.add(key)
            return "ERROR"
        return classify(body)

    def pump(self, source: str, stream: str, fileobj: IO[bytes]) -> threading.Thread:
        """Read ``fileobj`` (a binary pipe) in a daemon thread until EOF, feeding ``write``."""

        def run() -> None:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            read = getattr(fileobj, "read1", None) or fileobj.read
            try:
                while True:
                    data = read(64 * 1024)
                    if not data:
                        break
                    text = data if isinstance(data, str) else decoder.decode(data)
                    self.write(source, stream, text)
            except (OSError, ValueError) as exc:
                _warn(f"reading {source} {stream} stopped: {exc}")
            finally:
                rest = decoder.decode(b"", final=True)
                if rest:
                    self.write(source, stream, rest)
                self.end_stream(source, stream)

        thread = threading.Thread(target=run, name=f"logsink-{source}-{stream}", daemon=True)
        thread.start()
        return thread

    def tail(self, n: int) -> list[str]:
        """The last ``n`` complete lines across sources, oldest first (at most 1,000)."""
        if n <= 0:
            return []
        with self._lock:
            return list(self._tail)[-n:]

    # -- flushing ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - the flusher must outlive any bug
                _warn(f"flush failed: {exc!r}")

    def pending(self) -> int:
        """How many complete lines are not yet in the store."""
        with self._lock:
            return sum(len(s.waiting) + len(s.encoded) for s in self._sources.values())

    def flush(self) -> bool:
        """Write every complete line buffered so far; True when nothing is left unwritten."""
        with self._flush_lock:
            with self._lock:
                sources = list(self._sources.values())
            done = True
            for source in sources:
                done = self._flush_source(source) and done
            return done

    def _flush_source(self, source: _Source) -> bool:
        if source.next_seq is None:
            try:
                source.next_seq, source.next_line = self._resume_point(source.name)
            except Exception as exc:  # noqa: BLE001 - any store failure: retry next flush
                _warn(f"cannot find where {self.prefix}{source.name}/ ends: {exc!r}")
                return False
        with self._lock:
            waiting, source.waiting = source.waiting, []
        for stamp, level, stream, body in waiting:
            record = {
                "time": stamp,
                "level": level,
                "stream": stream,
                "source": source.name,
                "line": source.next_line,
                "body": body,
            }
            source.next_line += 1
            line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
            source.encoded.append(line.encode("utf-8", "replace"))
        while source.encoded:
            size, count = 0, 0
            for line_bytes in source.encoded:
                if count and size + len(line_bytes) > self.max_chunk_bytes:
                    break
                size += len(line_bytes)
                count += 1
            key = f"{self.prefix}{source.name}/{source.next_seq:08d}.jsonl"
            try:
                self.store.write(key, b"".join(source.encoded[:count]))
            except Exception as exc:  # noqa: BLE001 - keep the lines, retry next flush
                _warn(f"writing {key} failed, will retry: {exc!r}")
                return False
            with self._lock:
                del source.encoded[:count]
            source.next_seq += 1
        return True

    def _resume_point(self, source: str) -> tuple[int, int]:
        """(next seq, next line) after the chunks an earlier writer left for ``source``."""
        base = f"{self.prefix}{source}/"
        seqs = sorted(
            int(match.group(1))
            for key in self.store.list(base)
            if (match := CHUNK_NAME.match(key[len(base) :]))
        )
        for seq in reversed(seqs):
            for raw in reversed(self.store.read(f"{base}{seq:08d}.jsonl").splitlines()):
                try:
                    line = json.loads(raw)["line"]
                except (ValueError, KeyError, TypeError):
                    continue
                if isinstance(line, int):
                    return seqs[-1] + 1, line + 1
        return (seqs[-1] + 1 if seqs else 0), 0

    # -- closing -------------------------------------------------------------------------

    def close(self, attempts: int = 3) -> None:
        """Turn partial lines into lines, stop the flusher and write what is left. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for key in list(self._partial):
                rest = self._partial.pop(key)
                if rest:
                    self._emit_locked(key, rest.removesuffix("\r"))
        self._stop.set()
        self._thread.join()
        for attempt in range(max(1, attempts)):
            if self.flush():
                return
            if attempt + 1 < attempts:
                time.sleep(0.2 * (attempt + 1))
        _warn(f"{self.pending()} log lines below {self.prefix} could not be written")

    def __enter__(self) -> LogSink:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
