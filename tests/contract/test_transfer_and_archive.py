"""Transfers between storage URIs and local directories (file:// and s3:// on a real moto
server), and safe extraction of user-supplied zip archives."""

from __future__ import annotations

import stat
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from chalicelib.config import reset_settings
from chalicelib.errors import NotFoundError
from chalicelib.objectstore.archive import UnsafeArchiveError, safe_extract_zip
from chalicelib.objectstore.transfer import DataLimitError, download_uri, upload_dir


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The only directory file:// URIs may name in these tests."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    monkeypatch.setenv("OPENMAKER_FILE_ROOTS", str(allowed))
    reset_settings()
    yield allowed.resolve()
    monkeypatch.undo()
    reset_settings()


def tree(base: Path, files: dict[str, bytes]) -> Path:
    for relative, data in files.items():
        path = base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return base


def contents(base: Path) -> dict[str, bytes]:
    if not base.exists():
        return {}
    return {
        p.relative_to(base).as_posix(): p.read_bytes()
        for p in sorted(base.rglob("*"))
        if p.is_file()
    }


def put(endpoint: str, bucket: str, objects: dict[str, bytes]) -> None:
    client = boto3.session.Session().client("s3", endpoint_url=endpoint)
    for key, data in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=data)


DATASET = {
    "ds/train/a.csv": b"a" * 10,
    "ds/train/sub/b.csv": b"b" * 20,
    "ds/test.csv": b"c" * 5,
    "ds-other/not-mine.csv": b"x",
}
UNDER_DS = {"train/a.csv": b"a" * 10, "train/sub/b.csv": b"b" * 20, "test.csv": b"c" * 5}


# --- download_uri ---------------------------------------------------------------------------


def test_download_a_file_prefix_keeps_relative_paths(root: Path, tmp_path: Path) -> None:
    tree(root, DATASET)
    dest = tmp_path / "dest"
    assert download_uri(f"file://{root}/ds", dest) == 35
    assert contents(dest) == UNDER_DS


def test_download_a_single_file_lands_under_its_basename(root: Path, tmp_path: Path) -> None:
    tree(root, DATASET)
    dest = tmp_path / "dest"
    assert download_uri(f"file://{root}/ds/train/sub/b.csv", dest) == 20
    assert contents(dest) == {"b.csv": b"b" * 20}


def test_download_an_s3_prefix_keeps_relative_paths(
    s3_bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    put(s3_endpoint, s3_bucket, DATASET)
    dest = tmp_path / "dest"
    assert download_uri(f"s3://{s3_bucket}/ds/", dest) == 35
    assert contents(dest) == UNDER_DS


def test_download_a_single_s3_object(s3_bucket: str, s3_endpoint: str, tmp_path: Path) -> None:
    put(s3_endpoint, s3_bucket, DATASET)
    dest = tmp_path / "dest"
    assert download_uri(f"s3://{s3_bucket}/ds/test.csv", dest) == 5
    assert contents(dest) == {"test.csv": b"c" * 5}


def test_download_a_whole_bucket(s3_bucket: str, s3_endpoint: str, tmp_path: Path) -> None:
    put(s3_endpoint, s3_bucket, DATASET)
    assert download_uri(f"s3://{s3_bucket}", tmp_path / "dest") == 36
    assert contents(tmp_path / "dest") == DATASET


def test_over_the_limit_nothing_is_written(
    s3_bucket: str, s3_endpoint: str, root: Path, tmp_path: Path
) -> None:
    put(s3_endpoint, s3_bucket, DATASET)
    tree(root, DATASET)
    for scheme, uri in (("s3", f"s3://{s3_bucket}/ds"), ("file", f"file://{root}/ds")):
        dest = tmp_path / f"dest-{scheme}"
        with pytest.raises(DataLimitError, match="35 bytes in 3 objects, over the limit of 34"):
            download_uri(uri, dest, max_bytes=34)
        assert not dest.exists()
        assert download_uri(uri, dest, max_bytes=35) == 35  # exactly at the limit is fine
        assert contents(dest) == UNDER_DS


def test_nothing_at_the_uri_is_not_found(s3_bucket: str, root: Path, tmp_path: Path) -> None:
    for uri in (f"s3://{s3_bucket}/nothing", f"file://{root}/nothing"):
        with pytest.raises(NotFoundError, match="nothing to download"):
            download_uri(uri, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_download_refuses_a_file_uri_outside_the_roots(root: Path, tmp_path: Path) -> None:
    tree(tmp_path / "private", {"key.pem": b"secret"})
    with pytest.raises(Exception, match="OPENMAKER_FILE_ROOTS"):
        download_uri(f"file://{tmp_path}/private", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


# --- upload_dir -----------------------------------------------------------------------------


def local_source(tmp_path: Path) -> Path:
    src = tree(tmp_path / "src", {"model.bin": b"w" * 8, "meta/info.json": b"{}"})
    (tmp_path / "outside.txt").write_bytes(b"not for upload")
    (tmp_path / "outside-dir").mkdir()
    (tmp_path / "outside-dir" / "x").write_bytes(b"nor this")
    (src / "file-link").symlink_to(tmp_path / "outside.txt")
    (src / "dir-link").symlink_to(tmp_path / "outside-dir")
    return src


def test_upload_dir_to_s3_skips_symlinks(s3_bucket: str, s3_endpoint: str, tmp_path: Path) -> None:
    src = local_source(tmp_path)
    keys = upload_dir(src, f"s3://{s3_bucket}/models/run-1/")
    assert keys == ["models/run-1/meta/info.json", "models/run-1/model.bin"]
    client = boto3.session.Session().client("s3", endpoint_url=s3_endpoint)
    listed = client.list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert sorted(o["Key"] for o in listed) == keys
    body = client.get_object(Bucket=s3_bucket, Key="models/run-1/model.bin")["Body"]
    assert body.read() == b"w" * 8


def test_upload_dir_to_a_file_uri_and_back(root: Path, tmp_path: Path) -> None:
    src = local_source(tmp_path)
    keys = upload_dir(src, f"file://{root}/published")
    assert keys == ["published/meta/info.json", "published/model.bin"]
    assert contents(root / "published") == {"meta/info.json": b"{}", "model.bin": b"w" * 8}
    assert download_uri(f"file://{root}/published", tmp_path / "back") == 10
    assert contents(tmp_path / "back") == contents(root / "published")


def test_upload_dir_to_a_bucket_root(s3_bucket: str, tmp_path: Path) -> None:
    src = tree(tmp_path / "src", {"a.txt": b"a"})
    assert upload_dir(src, f"s3://{s3_bucket}") == ["a.txt"]
    assert download_uri(f"s3://{s3_bucket}/a.txt", tmp_path / "dest") == 1


def test_upload_dir_of_a_missing_directory_is_not_found(s3_bucket: str, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="not a directory"):
        upload_dir(tmp_path / "missing", f"s3://{s3_bucket}/x")


# --- safe_extract_zip -----------------------------------------------------------------------

GOOD_FIRST = ("good/first.txt", b"written before the bad entry is reached")


def make_zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return path


def symlink_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def test_a_good_zip_is_extracted(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "ok.zip",
        [
            ("src/", b""),
            ("src/train.py", b"print('hi')\n"),
            ("src/pkg/__init__.py", b""),
            ("./README.md", b"# readme"),
            ("empty-dir/", b""),
            ("data/zeros.bin", b"\0" * 100_000),  # compressible, but under 1 MiB
        ],
    )
    dest = tmp_path / "dest"
    extracted = safe_extract_zip(archive, dest)
    assert extracted == ["src/train.py", "src/pkg/__init__.py", "README.md", "data/zeros.bin"]
    assert contents(dest) == {
        "README.md": b"# readme",
        "data/zeros.bin": b"\0" * 100_000,
        "src/pkg/__init__.py": b"",
        "src/train.py": b"print('hi')\n",
    }
    assert (dest / "empty-dir").is_dir()
    assert not [p for p in dest.iterdir() if p.name.startswith(".extract-")]


BAD_ENTRIES: dict[str, tuple[list[tuple[str | zipfile.ZipInfo, bytes]], str]] = {
    "parent segment": ([("../x", b"x")], "parent_segment"),
    "nested parent segment": ([("a/b/../../../x", b"x")], "parent_segment"),
    "backslash parent segment": ([("..\\x", b"x")], "parent_segment"),
    "absolute path": ([("/abs", b"x")], "absolute_path"),
    "windows drive": ([("C:\\Windows\\x.dll", b"x")], "absolute_path"),
    "windows root": ([("\\\\server\\share\\x", b"x")], "absolute_path"),
    "symlink entry": ([(symlink_entry("link"), b"/etc/passwd")], "symlink"),
    "duplicate entry": ([("a.txt", b"1"), ("a.txt", b"2")], "duplicate"),
    "file and dir": ([("a", b"1"), ("a/b", b"2")], "path_conflict"),
    "bomb": ([("zeros.bin", b"\0" * 50_000_000)], "compression_ratio"),
}


@pytest.mark.filterwarnings("ignore:Duplicate name")  # zipfile warns while we build one
@pytest.mark.parametrize("case", BAD_ENTRIES, ids=list(BAD_ENTRIES))
def test_unsafe_entries_are_refused_before_anything_is_written(case: str, tmp_path: Path) -> None:
    entries, rule = BAD_ENTRIES[case]
    archive = make_zip(tmp_path / "bad.zip", [GOOD_FIRST, *entries])
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError) as caught:
        safe_extract_zip(archive, dest)
    assert caught.value.rule == rule
    assert caught.value.details[0]["rule"] == rule
    assert not dest.exists()
    assert not (tmp_path / "x").exists() and not Path("/abs").exists()


def test_too_many_entries_are_refused(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "many.zip", [(f"f{i}", b"") for i in range(4)])
    with pytest.raises(UnsafeArchiveError, match="more than 3 entries") as caught:
        safe_extract_zip(archive, tmp_path / "dest", max_files=3)
    assert caught.value.rule == "max_files"
    assert not (tmp_path / "dest").exists()
    assert len(safe_extract_zip(archive, tmp_path / "dest", max_files=4)) == 4


def test_too_many_bytes_are_refused(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "big.zip", [GOOD_FIRST, ("b", b"1" * 600), ("c", b"2" * 600)])
    with pytest.raises(UnsafeArchiveError) as caught:
        safe_extract_zip(archive, tmp_path / "dest", max_total_bytes=1000)
    assert (caught.value.rule, caught.value.entry) == ("max_total_bytes", "c")
    assert not (tmp_path / "dest").exists()


def test_a_refused_archive_leaves_an_existing_destination_as_it_was(tmp_path: Path) -> None:
    dest = tree(tmp_path / "dest", {"keep.txt": b"mine"})
    archive = make_zip(tmp_path / "bad.zip", [GOOD_FIRST, ("/abs", b"x")])
    with pytest.raises(UnsafeArchiveError):
        safe_extract_zip(archive, dest)
    assert contents(dest) == {"keep.txt": b"mine"}
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]


def test_a_symlink_already_in_the_destination_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(outside)
    archive = make_zip(tmp_path / "a.zip", [GOOD_FIRST, ("link/planted", b"x")])
    with pytest.raises(UnsafeArchiveError) as caught:
        safe_extract_zip(archive, dest)
    assert caught.value.rule == "symlink"
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in dest.iterdir()) == ["link"]


def understate_size(path: Path, name: str, declared: int) -> None:
    """Rewrite the local and central headers of ``name`` to declare ``declared`` bytes."""
    raw = bytearray(path.read_bytes())
    encoded = name.encode()
    for signature, size_at, name_len_at, name_at in (
        (b"PK\x03\x04", 22, 26, 30),  # local file header
        (b"PK\x01\x02", 24, 28, 46),  # central directory header
    ):
        start = raw.find(signature)
        while start != -1:
            (name_len,) = struct.unpack_from("<H", raw, start + name_len_at)
            if raw[start + name_at : start + name_at + name_len] == encoded:
                struct.pack_into("<I", raw, start + size_at, declared)
            start = raw.find(signature, start + 4)
    path.write_bytes(bytes(raw))


def test_a_header_that_understates_the_size_is_caught_while_extracting(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "liar.zip", [GOOD_FIRST, ("liar.bin", bytes(range(256)) * 4096)])
    understate_size(archive, "liar.bin", 1000)
    with zipfile.ZipFile(archive) as check:
        assert check.getinfo("liar.bin").file_size == 1000  # the lie passes validation
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError) as caught:
        safe_extract_zip(archive, dest)
    assert caught.value.rule in {"declared_size", "corrupt"}
    assert caught.value.entry == "liar.bin"
    assert not dest.exists()  # the good entry extracted first was removed too


def test_a_file_that_is_not_a_zip_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"not a zip at all")
    with pytest.raises(UnsafeArchiveError) as caught:
        safe_extract_zip(fake, tmp_path / "dest")
    assert caught.value.rule == "format"
    with pytest.raises(NotFoundError):
        safe_extract_zip(tmp_path / "missing.zip", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
