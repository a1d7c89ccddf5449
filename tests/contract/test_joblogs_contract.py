"""Reading durable job logs: cursors (follow), pages and tenant-wide search."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chalicelib.errors import BadRequestError
from chalicelib.objectstore import LocalFileStore, ObjectStore
from chalicelib.services.joblogs import (
    LogRecord,
    decode_cursor,
    encode_cursor,
    log_prefix,
    page_logs,
    read_logs,
    search_logs,
)
from runners.logsink import LogSink

APPKEY = "APPKEY0000000000000A"
OTHER_APPKEY = "APPKEY0000000000000B"
PREFIX = log_prefix("training", APPKEY, "train-1")
T0 = datetime(2026, 11, 22, 6, 0, 0)


class CountingStore(LocalFileStore):
    """Counts object reads, to check that cursors skip what is behind them."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    def read(self, key: str) -> bytes:
        self.reads.append(key)
        return super().read(key)


@pytest.fixture(params=["local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CountingStore]:
    yield CountingStore(tmp_path / "root")


def put_chunk(
    store: ObjectStore,
    prefix: str,
    source: str,
    seq: int,
    lines: list[tuple[int, int, str]],
    *,
    level: str = "INFO",
    stream: str = "stdout",
) -> None:
    """Write chunk ``seq`` of ``source``: (line number, seconds after T0, body) per record."""
    out = []
    for line, seconds, body in lines:
        stamp = (T0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds") + "+00:00"
        record = {
            "time": stamp,
            "level": level,
            "stream": stream,
            "source": source,
            "line": line,
            "body": body,
        }
        out.append(json.dumps(record) + "\n")
    store.write(f"{prefix}{source}/{seq:08d}.jsonl", "".join(out).encode())


def drain(
    store: ObjectStore, prefix: str, cursor: str | None, limit: int = 1000, **kwargs: Any
) -> tuple[list[LogRecord], str]:
    got: list[LogRecord] = []
    while True:
        page, cursor = read_logs(store, prefix, cursor=cursor, limit=limit, **kwargs)
        got += page
        if not page:
            return got, cursor


# -- read_logs ------------------------------------------------------------------------------


def test_reading_from_the_start_merges_sources_by_time_source_and_line(
    store: CountingStore,
) -> None:
    put_chunk(store, PREFIX, "node0-rank0", 0, [(0, 0, "a0"), (1, 2, "a1"), (2, 4, "a2")])
    put_chunk(store, PREFIX, "node0-rank0", 1, [(3, 6, "a3")])
    put_chunk(store, PREFIX, "driver", 0, [(0, 1, "d0"), (1, 4, "d1"), (2, 5, "d2")])
    records, cursor = read_logs(store, PREFIX, cursor=None, limit=4)
    assert [r.body for r in records] == ["a0", "d0", "a1", "d1"]
    assert decode_cursor(cursor) == {"driver": 2, "node0-rank0": 2}
    records, cursor = read_logs(store, PREFIX, cursor=cursor, limit=4)
    assert [r.body for r in records] == ["a2", "d2", "a3"]
    records, again = read_logs(store, PREFIX, cursor=cursor, limit=4)
    assert records == []
    assert decode_cursor(again) == decode_cursor(cursor) == {"driver": 3, "node0-rank0": 4}


def test_records_serialize_camel_case_with_utc_times(store: CountingStore) -> None:
    put_chunk(store, PREFIX, "driver", 0, [(0, 0, "hello")], level="WARNING", stream="stderr")
    (record,), _ = read_logs(store, PREFIX, cursor=None, limit=10)
    wire = record.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert wire == {
        "time": "2026-11-22T06:00:00.000+00:00",
        "level": "WARNING",
        "stream": "stderr",
        "source": "driver",
        "line": 0,
        "body": "hello",
    }


def test_a_chunk_written_late_for_one_source_is_still_delivered(store: CountingStore) -> None:
    put_chunk(store, PREFIX, "node0-rank0", 0, [(0, 0, "a0"), (1, 10, "a1")])
    got, cursor = drain(store, PREFIX, None)
    assert [r.body for r in got] == ["a0", "a1"]
    # node1's first chunk lands after the reader has moved past its times
    put_chunk(store, PREFIX, "node1-rank1", 0, [(0, 1, "b0"), (1, 5, "b1")])
    put_chunk(store, PREFIX, "node0-rank0", 1, [(2, 20, "a2")])
    got, cursor = drain(store, PREFIX, cursor)
    assert [r.body for r in got] == ["b0", "b1", "a2"]
    put_chunk(store, PREFIX, "node1-rank1", 1, [(2, 6, "b2")])  # late again, older than a2
    got, _ = drain(store, PREFIX, cursor)
    assert [r.body for r in got] == ["b2"]


def test_the_source_filter_advances_only_that_source(store: CountingStore) -> None:
    put_chunk(store, PREFIX, "node0-rank0", 0, [(0, 0, "a0"), (1, 2, "a1")])
    put_chunk(store, PREFIX, "driver", 0, [(0, 1, "d0")])
    only_driver, cursor = read_logs(store, PREFIX, cursor=None, limit=10, source="driver")
    assert [r.body for r in only_driver] == ["d0"]
    rest, _ = read_logs(store, PREFIX, cursor=cursor, limit=10)
    assert [r.body for r in rest] == ["a0", "a1"]


def test_a_cursor_does_not_reread_the_chunks_behind_it(store: CountingStore) -> None:
    for seq in range(64):
        put_chunk(
            store, PREFIX, "driver", seq, [(seq * 10 + i, seq * 10 + i, "x") for i in range(10)]
        )
    cursor = encode_cursor({"driver": 500})
    store.reads.clear()
    records, _ = read_logs(store, PREFIX, cursor=cursor, limit=5)
    assert [r.line for r in records] == [500, 501, 502, 503, 504]
    assert len(store.reads) <= 8  # a binary search, not 51 chunk reads
    # following a live job: the cursor sits in the last chunk, which is all it reads
    store.reads.clear()
    records, _ = read_logs(store, PREFIX, cursor=encode_cursor({"driver": 635}), limit=5)
    assert [r.line for r in records] == [635, 636, 637, 638, 639]
    assert store.reads == [f"{PREFIX}driver/00000063.jsonl"]


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64 !!",
        base64.urlsafe_b64encode(b"not json").decode(),
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(b'{"driver": -1}').decode(),
        base64.urlsafe_b64encode(b'{"driver": true}').decode(),
        base64.urlsafe_b64encode(b'{"driver": "3"}').decode(),
        base64.urlsafe_b64encode(b'{"../x": 3}').decode(),
    ],
)
def test_a_cursor_this_api_did_not_return_is_refused(store: CountingStore, cursor: str) -> None:
    with pytest.raises(BadRequestError, match="cursor is not one this API returned"):
        read_logs(store, PREFIX, cursor=cursor, limit=10)


def test_limits_outside_1_to_1000_are_refused(store: CountingStore) -> None:
    for limit in (0, 1001):
        with pytest.raises(BadRequestError):
            read_logs(store, PREFIX, cursor=None, limit=limit)
        with pytest.raises(BadRequestError):
            page_logs(store, PREFIX, page=1, limit=limit)


def test_following_a_live_writer_delivers_every_line_exactly_once(store: CountingStore) -> None:
    sink = LogSink(store, PREFIX, flush_interval=0.005, max_chunk_bytes=2048)
    per_thread = 400
    sources = ["node0-rank0", "node1-rank0", "driver"]
    reader_caught_up = threading.Event()

    def write(source: str) -> None:
        for i in range(per_thread):
            if i == per_thread // 2:  # make sure the reader overlaps the writers
                reader_caught_up.wait(timeout=30)
            sink.write(source, "stdout", f"{source} {i}\n")
            if i % 10 == 0:
                time.sleep(0.001)

    writers = [threading.Thread(target=write, args=(s,)) for s in sources]
    for thread in writers:
        thread.start()
    got: list[LogRecord] = []
    cursor: str | None = None
    reads = 0
    while any(thread.is_alive() for thread in writers) or reads < 3:
        page, cursor = read_logs(store, PREFIX, cursor=cursor, limit=37)
        got += page
        reads += 1
        if got:
            reader_caught_up.set()
    read_while_writing = len(got)
    for thread in writers:
        thread.join()
    sink.close()
    assert read_while_writing > 0  # the reader really raced the writer
    rest, _ = drain(store, PREFIX, cursor, limit=37)
    got += rest
    keys = [(r.source, r.line) for r in got]
    assert len(keys) == len(set(keys)), "a line was delivered twice"
    assert sorted(r.body for r in got) == sorted(
        f"{source} {i}" for source in sources for i in range(per_thread)
    )
    for source in sources:
        assert [r.body for r in got if r.source == source] == [
            f"{source} {i}" for i in range(per_thread)
        ]
    assert len(list(store.list(f"{PREFIX}driver/"))) > 1  # lines spread over many chunks


# -- page_logs ------------------------------------------------------------------------------


@pytest.fixture
def two_sources(store: CountingStore) -> CountingStore:
    put_chunk(store, PREFIX, "node0-rank0", 0, [(0, 0, "a0"), (1, 2, "a1")])
    put_chunk(store, PREFIX, "node0-rank0", 1, [(2, 4, "a2"), (3, 6, "a3")])
    put_chunk(store, PREFIX, "driver", 0, [(0, 1, "d0"), (1, 3, "d1"), (2, 5, "d2")])
    return store


def test_pages_ascending_and_descending_with_the_total(two_sources: CountingStore) -> None:
    store = two_sources
    pages = [page_logs(store, PREFIX, page=p, limit=3)[0] for p in (1, 2, 3)]
    assert [[r.body for r in page] for page in pages] == [
        ["a0", "d0", "a1"],
        ["d1", "a2", "d2"],
        ["a3"],
    ]
    records, total = page_logs(store, PREFIX, page=1, limit=3, order="desc")
    assert total == 7
    assert [r.body for r in records] == ["a3", "d2", "a2"]
    records, total = page_logs(store, PREFIX, page=3, limit=3, order="desc")
    assert [r.body for r in records] == ["a0"]
    assert page_logs(store, PREFIX, page=4, limit=3) == ([], 7)


def test_pages_of_one_source(two_sources: CountingStore) -> None:
    records, total = page_logs(two_sources, PREFIX, page=1, limit=2, source="node0-rank0")
    assert total == 4
    assert [r.body for r in records] == ["a0", "a1"]
    records, total = page_logs(two_sources, PREFIX, page=1, limit=10, source="nobody")
    assert (records, total) == ([], 0)


def test_pages_refuse_a_bad_order_or_page(two_sources: CountingStore) -> None:
    with pytest.raises(BadRequestError):
        page_logs(two_sources, PREFIX, page=1, limit=10, order="sideways")  # type: ignore[arg-type]
    with pytest.raises(BadRequestError):
        page_logs(two_sources, PREFIX, page=0, limit=10)


def test_an_empty_prefix_has_no_logs(store: CountingStore) -> None:
    assert page_logs(store, PREFIX, page=1, limit=10) == ([], 0)
    records, cursor = read_logs(store, PREFIX, cursor=None, limit=10)
    assert records == []
    assert decode_cursor(cursor) == {}


# -- search_logs ----------------------------------------------------------------------------


@pytest.fixture
def tenant_logs(store: CountingStore) -> CountingStore:
    first = log_prefix("training", APPKEY, "train-1")
    second = log_prefix("training", APPKEY, "train-2")
    put_chunk(store, first, "node0-rank0", 0, [(0, 0, "Epoch 1 loss 0.9"), (1, 10, "epoch 2")])
    put_chunk(store, first, "node0-rank0", 1, [(2, 20, "CUDA out of memory")], level="ERROR")
    put_chunk(store, second, "driver", 0, [(0, 5, "slow step")], level="WARNING")
    put_chunk(store, second, "driver", 1, [(1, 15, "EPOCH 1 done")])
    # another tenant and another category must never show up
    put_chunk(
        store, log_prefix("training", OTHER_APPKEY, "train-9"), "driver", 0, [(0, 1, "epoch")]
    )
    put_chunk(store, log_prefix("batch_inference", APPKEY, "bi-1"), "driver", 0, [(0, 2, "epoch")])
    return store


def search(store: ObjectStore, **kwargs: Any) -> tuple[list[LogRecord], int]:
    query: dict[str, Any] = {
        "resource_ids": None,
        "level": None,
        "since": None,
        "until": None,
        "text": None,
        "page": 1,
        "limit": 100,
    }
    query.update(kwargs)
    return search_logs(store, APPKEY, "training", **query)


def test_search_returns_the_tenants_category_newest_first(tenant_logs: CountingStore) -> None:
    records, total = search(tenant_logs)
    assert total == 5
    assert [r.body for r in records] == [
        "CUDA out of memory",
        "EPOCH 1 done",
        "epoch 2",
        "slow step",
        "Epoch 1 loss 0.9",
    ]
    assert [r.resource_id for r in records] == [
        "train-1",
        "train-2",
        "train-1",
        "train-2",
        "train-1",
    ]
    assert {r.category for r in records} == {"training"}
    wire = records[0].model_dump(mode="json", by_alias=True)
    assert (wire["resourceId"], wire["category"]) == ("train-1", "training")


def test_search_filters_by_level(tenant_logs: CountingStore) -> None:
    records, total = search(tenant_logs, level="ERROR")
    assert (total, [r.body for r in records]) == (1, ["CUDA out of memory"])
    records, total = search(tenant_logs, level="warning")
    assert (total, [r.body for r in records]) == (1, ["slow step"])
    with pytest.raises(BadRequestError):
        search(tenant_logs, level="DEBUG")


def test_search_time_range_includes_since_and_excludes_until(tenant_logs: CountingStore) -> None:
    records, total = search(
        tenant_logs, since=T0 + timedelta(seconds=5), until=T0 + timedelta(seconds=15)
    )
    assert (total, [r.body for r in records]) == (2, ["epoch 2", "slow step"])
    aware = (T0 + timedelta(seconds=15)).replace(tzinfo=UTC)
    records, _ = search(tenant_logs, since=aware)
    assert [r.body for r in records] == ["CUDA out of memory", "EPOCH 1 done"]


def test_search_text_is_a_case_insensitive_substring(tenant_logs: CountingStore) -> None:
    records, total = search(tenant_logs, text="epoch 1")
    assert (total, [r.body for r in records]) == (2, ["EPOCH 1 done", "Epoch 1 loss 0.9"])


def test_search_restricted_to_resource_ids(tenant_logs: CountingStore) -> None:
    records, total = search(tenant_logs, resource_ids=["train-2"])
    assert (total, [r.body for r in records]) == (2, ["EPOCH 1 done", "slow step"])
    assert search(tenant_logs, resource_ids=["train-404"]) == ([], 0)
    with pytest.raises(BadRequestError):
        search(tenant_logs, resource_ids=["../train-1"])


def test_search_combines_filters_and_pages(tenant_logs: CountingStore) -> None:
    records, total = search(tenant_logs, text="epoch", resource_ids=["train-1"], level="INFO")
    assert (total, [r.body for r in records]) == (2, ["epoch 2", "Epoch 1 loss 0.9"])
    page2, total = search(tenant_logs, page=2, limit=2)
    assert (total, [r.body for r in page2]) == (5, ["epoch 2", "slow step"])
    page3, _ = search(tenant_logs, page=3, limit=2)
    assert [r.body for r in page3] == ["Epoch 1 loss 0.9"]
    with pytest.raises(BadRequestError):
        search(tenant_logs, page=11, limit=1000)


def test_search_since_stops_at_old_chunks_but_misses_nothing(store: CountingStore) -> None:
    prefix = log_prefix("training", APPKEY, "long")
    for seq in range(20):  # one chunk per hour
        put_chunk(store, prefix, "driver", seq, [(seq, seq * 3600, f"hour {seq}")])
    store.reads.clear()
    records, total = search(store, since=T0 + timedelta(hours=17, minutes=30))
    assert [r.body for r in records] == ["hour 19", "hour 18"]
    assert total == 2
    assert len(store.reads) <= 4
