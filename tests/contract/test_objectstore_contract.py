"""One contract for every object store backend (today: local files)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.errors import NotFoundError
from chalicelib.objectstore import LocalFileStore, ObjectStore, PathEscapeError, open_uri


@pytest.fixture(params=["local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    yield LocalFileStore(tmp_path / "root")


def test_written_objects_read_back_byte_for_byte(store: ObjectStore) -> None:
    store.write("a/b/c.bin", b"\x00\x01payload")
    assert store.read("a/b/c.bin") == b"\x00\x01payload"
    assert store.exists("a/b/c.bin")
    store.write("a/b/c.bin", b"replaced")
    assert store.read("a/b/c.bin") == b"replaced"


def test_listing_is_sorted_and_filtered_by_prefix(store: ObjectStore) -> None:
    for key in ("runs/2/x", "runs/1/y", "logs/z", "runs/10/w"):
        store.write(key, key.encode())
    assert list(store.list("runs/")) == ["runs/1/y", "runs/10/w", "runs/2/x"]
    assert list(store.list()) == ["logs/z", "runs/1/y", "runs/10/w", "runs/2/x"]


def test_missing_objects_are_not_found_and_removing_them_is_harmless(store: ObjectStore) -> None:
    with pytest.raises(NotFoundError):
        store.read("nothing/here")
    assert not store.exists("nothing/here")
    store.remove("nothing/here")


def test_removing_a_prefix_removes_only_what_is_under_it(store: ObjectStore) -> None:
    for key in ("job/1/a", "job/1/b", "job/2/a"):
        store.write(key, b"x")
    assert store.remove_prefix("job/1/") == 2
    assert list(store.list()) == ["job/2/a"]


@pytest.mark.parametrize("key", ["../escape", "a/../../escape", "/etc/passwd", "a/\x00b"])
def test_keys_that_leave_the_root_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(PathEscapeError):
        store.write(key, b"x")
    with pytest.raises(PathEscapeError):
        store.read(key)


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "inside").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "inside" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(PathEscapeError):
        LocalFileStore(root).write("inside/link/file", b"x")


def test_file_uris_open_the_local_file_system(tmp_path: Path) -> None:
    store, key = open_uri(f"file://{tmp_path}/data/train.csv")
    store.write(key, b"a,b\n")
    assert (tmp_path / "data" / "train.csv").read_bytes() == b"a,b\n"
