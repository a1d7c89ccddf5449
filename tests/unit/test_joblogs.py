"""LogSink: the writer side of durable job logs (runners/logsink.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chalicelib.objectstore import LocalFileStore
from runners.logsink import MAX_LINE_BYTES, LogSink, classify, split_long

PREFIX = "logs/training/APPKEY/train-1/"


class FakeClock:
    """Each call returns a time 1 ms after the previous one."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 6, 24, 37, 343000, tzinfo=UTC)

    def __call__(self) -> datetime:
        current = self.now
        self.now += timedelta(milliseconds=1)
        return current


class FlakyStore(LocalFileStore):
    """A local store whose next ``failures`` writes raise."""

    def __init__(self, root: Path, failures: int = 0) -> None:
        super().__init__(root)
        self.failures = failures
        self.attempts = 0

    def write(self, key: str, data: bytes) -> None:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise OSError("store unavailable")
        super().write(key, data)


@pytest.fixture
def store(tmp_path: Path) -> LocalFileStore:
    return LocalFileStore(tmp_path / "store")


@pytest.fixture
def make_sink(store: LocalFileStore) -> Iterator[Callable[..., LogSink]]:
    sinks: list[LogSink] = []

    def make(**kwargs: Any) -> LogSink:
        kwargs.setdefault("flush_interval", 3600.0)  # tests flush by hand unless they say so
        kwargs.setdefault("clock", FakeClock())
        sink = LogSink(kwargs.pop("store", store), kwargs.pop("prefix", PREFIX), **kwargs)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


def chunks(store: LocalFileStore, source: str) -> list[str]:
    return list(store.list(f"{PREFIX}{source}/"))


def records(store: LocalFileStore, source: str) -> list[dict[str, Any]]:
    found = []
    for key in chunks(store, source):
        found += [json.loads(line) for line in store.read(key).decode().splitlines()]
    return found


def bodies(store: LocalFileStore, source: str) -> list[str]:
    return [record["body"] for record in records(store, source)]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_records_have_the_shared_layout_and_fields(
    store: LocalFileStore, make_sink: Callable[..., LogSink]
) -> None:
    sink = make_sink()
    sink.write("node0-rank0", "stdout", "epoch 1\nepoch 2\n")
    sink.write("driver", "stderr", "starting\n")
    assert sink.flush() is True
    assert chunks(store, "node0-rank0") == [f"{PREFIX}node0-rank0/00000000.jsonl"]
    assert chunks(store, "driver") == [f"{PREFIX}driver/00000000.jsonl"]
    first, second = records(store, "node0-rank0")
    assert first == {
        "time": "2026-11-22T06:24:37.343+00:00",
        "level": "INFO",
        "stream": "stdout",
        "source": "node0-rank0",
        "line": 0,
        "body": "epoch 1",
    }
    assert (second["line"], second["body"], second["time"]) == (
        1,
        "epoch 2",
        "2026-11-22T06:24:37.344+00:00",
    )
    assert records(store, "driver")[0]["stream"] == "stderr"


def test_a_partial_line_waits_for_its_newline_or_close(
    store: LocalFileStore, make_sink: Callable[..., LogSink]
) -> None:
    sink = make_sink()
    sink.write("driver", "stdout", "hel")
    sink.write("driver", "stdout", "lo\r\nwor")
    sink.write("driver", "stderr", "other stream\n")
    sink.flush()
    assert bodies(store, "driver") == ["hello", "other stream"]
    sink.write("driver", "stdout", "ld")
    sink.flush()
    assert bodies(store, "driver") == ["hello", "other stream"]
    sink.close()
    assert bodies(store, "driver") == ["hello", "other stream", "world"]
    assert [r["line"] for r in records(store, "driver")] == [0, 1, 2]


def test_empty_lines_are_kept_and_numbered(
    store: LocalFileStore, make_sink: Callable[..., LogSink]
) -> None:
    sink = make_sink()
    sink.write("driver", "stdout", "a\n\nb\n")
    sink.close()
    assert bodies(store, "driver") == ["a", "", "b"]


def test_long_lines_are_split_on_character_boundaries(
    store: LocalFileStore, make_sink: Callable[..., LogSink]
) -> None:
    long_line = "x" * (MAX_LINE_BYTES - 1) + "é" * 10_000  # 'é' is two bytes
    sink = make_sink()
    sink.write("driver", "stdout", long_line + "\nshort\n")
    sink.close()
    got = bodies(store, "driver")
    assert got[-1] == "short"
    pieces = got[:-1]
    assert len(pieces) == 3
    assert "".join(pieces) == long_line
    assert all(len(p.encode()) <= MAX_LINE_BYTES for p in pieces)
    assert [r["line"] for r in records(store, "driver")] == [0, 1, 2, 3]


def test_a_never_ending_line_does_not_grow_the_buffer_without_bound(
    store: LocalFileStore, make_sink: Callable[..., LogSink]
) -> None:
    sink = make_sink()
    for _ in range(40):
        sink.write("driver", "stdout", "y" * 1000)  # 40,000 bytes and no newline
    sink.flush()
    written = bodies(store, "driver")
    assert [len(b) for b in written] == [MAX_LINE_BYTES, MAX_LINE_BYTES]
    sink.close()
    assert "".join(bodies(store, "driver")) == "y" * 40_000


def test_split_long_keeps_short_lines_whole() -> None:
    assert split_long("abc") == ["abc"]
    assert split_long("日本語", limit=4) == ["日", "本", "語"]


def test_bytes_that_are_not_utf8_are_replaced(
    store: LocalFileStore, make_sink: Callable[..., LogSink]
) -> None:
    sink = make_sink()
    sink.write("driver", "stdout", b"bad \xff\xfe byte\n")
    sink.write("driver", "stdout", "lone \udcff surrogate\n")
    sink.close()
    assert bodies(store, "driver") == ["bad \ufffd\ufffd byte", "lone ? surrogate"]


@pytest.mark.parametrize(
    ("body", "level"),
    [
        ("2026-11-22 06:24:37 ERROR could not open file", "ERROR"),
        ("[CRITICAL] out of memory", "ERROR"),
        ("FATAL: rank 3 died", "ERROR"),
        ("Error: no such file", "ERROR"),
        ("ValueError: bad shape", "ERROR"),
        ("torch.cuda.OutOfMemoryError: CUDA out of memory", "ERROR"),
        ("KeyboardInterrupt", "ERROR"),
        ("WARNING:root:slow step", "WARNING"),
        ("[WARN] retrying", "WARNING"),
        ("/x/train.py:3: UserWarning: deprecated", "WARNING"),
        ("loss=0.3 ERRORS=0 warnings off", "INFO"),
        ("epoch 3 finished", "INFO"),
        ("no_error_here", "INFO"),
    ],
)
def test_levels_are_detected_from_the_text(body: str, level: str) -> None:
    assert classify(body) == level


def test_every_line_of_a_real_python_traceback_is_an_error(
    store: LocalFileStore, make_sink: Callable[..., LogSink], tmp_path: Path
) -> None:
    script = tmp_path / "fails.py"
    script.write_text(
        "def inner():\n    raise ValueError('boom')\n"
        "def outer():\n    inner()\n"
        "print('about to fail', flush=True)\nouter()\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 1
    sink = make_sink()
    sink.write("driver", "stdout", result.stdout)
    sink.write("driver", "stderr", result.stderr)
    sink.write("driver", "stderr", "cleaning up\n")
    sink.close()
    got = records(store, "driver")
    assert got[0]["body"] == "about to fail"
    assert got[0]["level"] == "INFO"
    traceback = got[1:-1]
    assert traceback[0]["body"] == "Traceback (most recent call last):"
    assert traceback[-1]["body"] == "ValueError: boom"
    assert any(r["body"].lstrip().startswith("raise ValueError") for r in traceback)
    assert {r["level"] for r in traceback} == {"ERROR"}
    assert got[-1]["body"] == "cleaning up"
    assert got[-1]["level"] == "INFO"


def test_the_background_thread_flushes_on_its_own(
    store: LocalFileStore, make_sink: Callable[..., LogSink]
) -> None:
    sink = make_sink(flush_interval=0.05)
    sink.write("node0-rank0", "stdout", "first\n")
    wait_for(lambda: bodies(store, "node0-rank0") == ["first"])
    sink.write("node0-rank0", "stdout", "second\n")
    wait_for(lambda: len(chunks(store, "node0-rank0")) == 2)
    assert bodies(store, "node0-rank0") == ["first", "second"]
    assert sink.pending() == 0


def test_a_flush_writes_one_chunk_per_source_split_by_size(
    store: LocalFileStore, make_sink: Callable[..., LogSink]
) -> None:
    sink = make_sink(max_chunk_bytes=1000)
    sink.write("driver", "stdout", "".join(f"line {i:03d} " + "z" * 80 + "\n" for i in range(50)))
    sink.write("node0-rank0", "stdout", "one\n")
    sink.flush()
    driver_chunks = chunks(store, "driver")
    assert len(driver_chunks) > 1
    assert all(len(store.read(key)) <= 1000 for key in driver_chunks)
    assert driver_chunks == [
        f"{PREFIX}driver/{seq:08d}.jsonl" for seq in range(len(driver_chunks))
    ]
    assert [r["line"] for r in records(store, "driver")] == list(range(50))
    assert len(chunks(store, "node0-rank0")) == 1


def test_a_failed_write_keeps_the_lines_for_the_next_flush(
    tmp_path: Path, make_sink: Callable[..., LogSink], capsys: pytest.CaptureFixture[str]
) -> None:
    flaky = FlakyStore(tmp_path / "flaky", failures=2)
    sink = make_sink(store=flaky)
    sink.write("driver", "stdout", "a\nb\n")
    assert sink.flush() is False
    assert "will retry" in capsys.readouterr().err
    sink.write("driver", "stdout", "c\n")
    assert sink.flush() is False
    assert sink.pending() == 3
    assert list(flaky.list(PREFIX)) == []
    assert sink.flush() is True
    assert sink.pending() == 0
    (key,) = list(flaky.list(PREFIX))
    assert key.endswith("driver/00000000.jsonl")
    got = [json.loads(line) for line in flaky.read(key).splitlines()]
    assert [(r["line"], r["body"]) for r in got] == [(0, "a"), (1, "b"), (2, "c")]


def test_close_retries_a_failing_store(tmp_path: Path, make_sink: Callable[..., LogSink]) -> None:
    flaky = FlakyStore(tmp_path / "flaky", failures=1)
    sink = make_sink(store=flaky)
    sink.write("driver", "stdout", "last words")
    sink.close()
    (key,) = list(flaky.list(PREFIX))
    assert json.loads(flaky.read(key))["body"] == "last words"


def test_seq_and_line_numbers_continue_after_a_restart(
    store: LocalFileStore, make_sink: Callable[..., LogSink]
) -> None:
    first = make_sink()
    first.write("node0-rank0", "stdout", "a\nb\n")
    first.flush()
    first.write("node0-rank0", "stdout", "c\n")
    first.close()
    assert len(chunks(store, "node0-rank0")) == 2
    second = make_sink()  # the writer process restarted
    second.write("node0-rank0", "stdout", "d\n")
    second.close()
    assert chunks(store, "node0-rank0")[-1].endswith("/00000002.jsonl")
    assert [(r["line"], r["body"]) for r in records(store, "node0-rank0")] == [
        (0, "a"),
        (1, "b"),
        (2, "c"),
        (3, "d"),
    ]


def test_pump_reads_a_real_subprocess_pipe_to_the_end(
    store: LocalFileStore, make_sink: Callable[..., LogSink]
) -> None:
    script = (
        "import sys, time\n"
        "for i in range(200):\n    print(f'step {i}', flush=True)\n"
        "sys.stderr.write('WARNING: almost done\\n'); sys.stderr.flush()\n"
        "sys.stdout.buffer.write(b'bad \\xff tail without newline'); sys.stdout.flush()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    sink = make_sink(flush_interval=0.05)
    threads = [
        sink.pump("node0-rank0", "stdout", process.stdout),
        sink.pump("node0-rank0", "stderr", process.stderr),
    ]
    assert process.wait(timeout=60) == 0
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    sink.close()
    got = records(store, "node0-rank0")
    stdout = [r["body"] for r in got if r["stream"] == "stdout"]
    assert stdout == [f"step {i}" for i in range(200)] + ["bad \ufffd tail without newline"]
    stderr = [r for r in got if r["stream"] == "stderr"]
    assert [(r["body"], r["level"]) for r in stderr] == [("WARNING: almost done", "WARNING")]
    assert sorted(r["line"] for r in got) == list(range(202))


def test_tail_returns_the_last_lines_across_sources(make_sink: Callable[..., LogSink]) -> None:
    sink = make_sink()
    assert sink.tail(5) == []
    sink.write("node0-rank0", "stdout", "one\ntwo\n")
    sink.write("node1-rank1", "stderr", "three\nfour\npartial")
    assert sink.tail(3) == ["two", "three", "four"]
    assert sink.tail(0) == []
    assert sink.tail(100) == ["one", "two", "three", "four"]
    sink.close()
    assert sink.tail(2) == ["four", "partial"]


def test_close_is_idempotent_and_later_writes_still_land(
    store: LocalFileStore, make_sink: Callable[..., LogSink]
) -> None:
    sink = make_sink(flush_interval=0.05)
    sink.write("driver", "stdout", "before")
    sink.close()
    sink.close()
    sink.write("driver", "stdout", "straggler\n")
    assert bodies(store, "driver") == ["before", "straggler"]
    assert not sink._thread.is_alive()


def test_concurrent_writers_lose_nothing(
    store: LocalFileStore, make_sink: Callable[..., LogSink]
) -> None:
    sink = make_sink(flush_interval=0.01, max_chunk_bytes=4096)

    def work(index: int) -> None:
        for i in range(300):
            sink.write("driver", "stdout", f"t{index} l{i}\n")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sink.close()
    got = records(store, "driver")
    assert [r["line"] for r in got] == list(range(1200))
    assert sorted(r["body"] for r in got) == sorted(
        f"t{n} l{i}" for n in range(4) for i in range(300)
    )
    for n in range(4):  # each thread's lines keep their order
        mine = [r["body"] for r in got if r["body"].startswith(f"t{n} ")]
        assert mine == [f"t{n} l{i}" for i in range(300)]


@pytest.mark.parametrize(
    ("source", "stream"), [("../up", "stdout"), ("a/b", "stdout"), ("ok", "log")]
)
def test_bad_sources_and_streams_are_refused(
    make_sink: Callable[..., LogSink], source: str, stream: str
) -> None:
    sink = make_sink()
    with pytest.raises(ValueError):
        sink.write(source, stream, "x\n")
