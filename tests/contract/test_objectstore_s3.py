"""The object-store contract on S3 (a real moto S3 server over HTTP), the streaming methods on
every backend, and the URI schemes: s3://, obs://, nas:// and the file:// roots."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from chalicelib.config import get_settings, reset_settings
from chalicelib.errors import BadRequestError, NotFoundError, ValidationError
from chalicelib.objectstore import (
    LocalFileStore,
    MountedFileStore,
    ObjectStore,
    PathEscapeError,
    S3Store,
    check_uri,
    open_uri,
)
from chalicelib.objectstore.s3 import parse_obs_uri
from tests.contract import test_objectstore_contract as contract


@pytest.fixture
def store(s3_bucket: str, s3_endpoint: str) -> S3Store:
    """Overrides the contract module's fixture: the contract tests below run against S3."""
    return S3Store(s3_bucket, endpoint_url=s3_endpoint)


# The unchanged contract, collected here so that it runs against ``store`` above.
test_s3_written_objects_read_back_byte_for_byte = (
    contract.test_written_objects_read_back_byte_for_byte
)
test_s3_listing_is_sorted_and_filtered_by_prefix = (
    contract.test_listing_is_sorted_and_filtered_by_prefix
)
test_s3_missing_objects_are_not_found_and_removing_them_is_harmless = (
    contract.test_missing_objects_are_not_found_and_removing_them_is_harmless
)
test_s3_removing_a_prefix_removes_only_what_is_under_it = (
    contract.test_removing_a_prefix_removes_only_what_is_under_it
)
test_s3_keys_that_leave_the_root_are_refused = contract.test_keys_that_leave_the_root_are_refused


def raw_client(endpoint: str) -> object:
    return boto3.session.Session().client("s3", endpoint_url=endpoint)


@pytest.fixture(params=["local", "mounted", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalFileStore(tmp_path / "root")
    if request.param == "mounted":
        return MountedFileStore(tmp_path / "root")
    bucket: str = request.getfixturevalue("s3_bucket")
    return S3Store(bucket, endpoint_url=request.getfixturevalue("s3_endpoint"))


@pytest.fixture
def allowed_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``OPENMAKER_FILE_ROOTS`` set to one fresh directory (and nothing else)."""
    root = tmp_path / "allowed"
    root.mkdir()
    monkeypatch.setenv("OPENMAKER_FILE_ROOTS", str(root))
    reset_settings()
    yield root.resolve()
    monkeypatch.undo()
    reset_settings()


@pytest.fixture
def nas_mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """NAS ``share-1`` mounted at a fresh directory; ``gone`` configured but not mounted."""
    mount = tmp_path / "mnt" / "share-1"
    mount.mkdir(parents=True)
    monkeypatch.setenv("OPENMAKER_NAS_ROOTS", f"share-1={mount},gone={tmp_path / 'absent'}")
    reset_settings()
    yield mount
    monkeypatch.undo()
    reset_settings()


# --- streaming methods, on every backend ----------------------------------------------------


def test_size_upload_and_download_stream_whole_files(
    any_store: ObjectStore, tmp_path: Path
) -> None:
    source = tmp_path / "in.bin"
    payload = os.urandom(9 * 1024 * 1024 + 17)  # above boto3's 8 MiB multipart threshold
    source.write_bytes(payload)
    any_store.upload_file(source, "models/v1/weights.bin")
    assert any_store.size("models/v1/weights.bin") == len(payload)
    assert list(any_store.list("models/")) == ["models/v1/weights.bin"]

    target = tmp_path / "out" / "deep" / "weights.bin"
    any_store.download_file("models/v1/weights.bin", target)
    assert target.read_bytes() == payload
    assert [p.name for p in target.parent.iterdir()] == ["weights.bin"]  # no temp left


def test_downloading_or_sizing_a_missing_object_is_not_found_and_writes_nothing(
    any_store: ObjectStore, tmp_path: Path
) -> None:
    target = tmp_path / "out" / "missing.bin"
    with pytest.raises(NotFoundError):
        any_store.download_file("no/such/object", target)
    with pytest.raises(NotFoundError):
        any_store.size("no/such/object")
    assert not target.exists()
    assert not target.parent.exists() or list(target.parent.iterdir()) == []  # no temp left


def test_streaming_methods_refuse_escaping_keys(any_store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("x")
    with pytest.raises(PathEscapeError):
        any_store.upload_file(source, "../outside.txt")
    with pytest.raises(PathEscapeError):
        any_store.download_file("/etc/passwd", tmp_path / "stolen")
    with pytest.raises(PathEscapeError):
        any_store.size("a/../../b")
    assert not (tmp_path / "stolen").exists()
    assert not (tmp_path / "outside.txt").exists()


def test_an_upload_replaces_the_object(any_store: ObjectStore, tmp_path: Path) -> None:
    any_store.write("k", b"old")
    source = tmp_path / "new.txt"
    source.write_bytes(b"newer")
    any_store.upload_file(source, "k")
    assert any_store.read("k") == b"newer"
    assert any_store.size("k") == 5


# --- S3 specifics ---------------------------------------------------------------------------


def test_remove_prefix_deletes_in_batches(store: S3Store) -> None:
    for i in range(7):
        store.write(f"ckpt/{i}", b"x")
    store.write("ckpt-other/keep", b"x")
    store.delete_batch = 3  # 7 keys: three DeleteObjects calls
    assert store.remove_prefix("ckpt/") == 7
    assert list(store.list()) == ["ckpt-other/keep"]


def test_listing_leaves_out_keys_the_interface_cannot_name(
    store: S3Store, s3_endpoint: str
) -> None:
    client = raw_client(s3_endpoint)
    for key in ("data/", "data//double", "data/ok.csv"):
        client.put_object(Bucket=store.bucket, Key=key, Body=b"x")  # type: ignore[attr-defined]
    assert list(store.list("data")) == ["data/ok.csv"]


def test_a_missing_bucket_is_not_found_and_names_the_bucket(
    s3_bucket: str, s3_endpoint: str
) -> None:
    missing = S3Store(f"{s3_bucket}-missing", endpoint_url=s3_endpoint)
    with pytest.raises(NotFoundError, match="-missing does not exist"):
        missing.read("k")
    with pytest.raises(NotFoundError, match="does not exist"):
        missing.write("k", b"x")


def test_stores_on_one_endpoint_share_one_client(s3_bucket: str, s3_endpoint: str) -> None:
    first, _ = open_uri(f"s3://{s3_bucket}/a")
    second, _ = open_uri(f"s3://{s3_bucket}/b")
    assert isinstance(first, S3Store) and isinstance(second, S3Store)
    assert first.client is second.client
    assert first.endpoint_url == s3_endpoint


def test_s3_uris_open_the_bucket_at_the_configured_endpoint(
    s3_bucket: str, s3_endpoint: str
) -> None:
    store, prefix = open_uri(f"s3://{s3_bucket}/runs/42/")
    assert prefix == "runs/42"
    store.write(f"{prefix}/metrics.json", b"{}")
    body = raw_client(s3_endpoint).get_object(  # type: ignore[attr-defined]
        Bucket=s3_bucket, Key="runs/42/metrics.json"
    )["Body"]
    assert body.read() == b"{}"


@pytest.mark.parametrize("uri", ["s3://", "s3:///key", "obs://", "obs://host", "obs://host/"])
def test_uris_without_a_bucket_are_refused_naming_the_shape(uri: str) -> None:
    with pytest.raises(BadRequestError, match=r"\{bucket\}|\{container\}") as caught:
        open_uri(uri)
    assert caught.value.details[0]["rule"] == "format"


def test_uris_with_parent_segments_are_refused() -> None:
    with pytest.raises(PathEscapeError):
        open_uri("s3://bucket/a/../../b")
    with pytest.raises(PathEscapeError):
        open_uri("obs://host/container/../x")


def test_obs_uris_reach_the_s3_compatible_api_of_the_host(
    s3_bucket: str, s3_endpoint: str
) -> None:
    host = s3_endpoint.removeprefix("http://")
    store, prefix = open_uri(f"obs://{host}/{s3_bucket}/datasets/train")
    store.write(f"{prefix}/part-0.csv", b"a,b\n")
    # The Swift-style path that NHN Cloud's console shows names the same container.
    same, same_prefix = open_uri(f"obs://{host}/v1/AUTH_0123abcd/{s3_bucket}/datasets/train")
    assert same_prefix == prefix == "datasets/train"
    assert same.read("datasets/train/part-0.csv") == b"a,b\n"
    body = raw_client(s3_endpoint).get_object(  # type: ignore[attr-defined]
        Bucket=s3_bucket, Key="datasets/train/part-0.csv"
    )["Body"]
    assert body.read() == b"a,b\n"


def test_obs_uses_https_unless_configured_insecure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENMAKER_OBS_INSECURE", raising=False)
    reset_settings()
    try:
        assert parse_obs_uri("obs://kr1-api.example.com/ctr/p/q") == (
            "https://kr1-api.example.com",
            "ctr",
            "p/q",
        )
        monkeypatch.setenv("OPENMAKER_OBS_INSECURE", "1")
        reset_settings()
        assert parse_obs_uri("obs://10.0.0.5:9000/ctr")[0] == "http://10.0.0.5:9000"
        with pytest.raises(BadRequestError, match="endpoint host"):
            parse_obs_uri("obs://user:pw@evil.example.com/ctr/p")
    finally:
        monkeypatch.undo()
        reset_settings()


# --- nas:// ---------------------------------------------------------------------------------


def test_nas_uris_map_to_the_configured_mount(nas_mounts: Path) -> None:
    store, prefix = open_uri("nas://share-1:/checkpoints/run-7")
    assert prefix == "checkpoints/run-7"
    store.write(f"{prefix}/epoch-1.pt", b"weights")
    assert (nas_mounts / "checkpoints" / "run-7" / "epoch-1.pt").read_bytes() == b"weights"
    assert list(store.list(f"{prefix}/")) == ["checkpoints/run-7/epoch-1.pt"]


def test_an_unknown_nas_id_names_the_configured_ones(nas_mounts: Path) -> None:
    with pytest.raises(BadRequestError) as caught:
        open_uri("nas://other:/data")
    message = caught.value.message
    assert "NAS other is not mounted here" in message
    assert "gone, share-1" in message and "OPENMAKER_NAS_ROOTS" in message
    assert caught.value.details[0]["rule"] == "nas_id"


def test_a_configured_but_unmounted_nas_is_refused_instead_of_filling_the_disk(
    nas_mounts: Path, tmp_path: Path
) -> None:
    with pytest.raises(BadRequestError, match="mount the share"):
        open_uri("nas://gone:/data")
    assert not (tmp_path / "absent").exists()


def test_nas_paths_cannot_climb_out_of_the_mount(nas_mounts: Path, tmp_path: Path) -> None:
    with pytest.raises(PathEscapeError):
        open_uri("nas://share-1:/../escape")
    (nas_mounts / "link").symlink_to(tmp_path)
    store, prefix = open_uri("nas://share-1:/link")
    with pytest.raises(PathEscapeError):
        store.write(f"{prefix}/planted", b"x")
    assert not (tmp_path / "planted").exists()


# --- file:// roots --------------------------------------------------------------------------


def test_file_uris_inside_a_root_open_and_keys_stay_inside(allowed_root: Path) -> None:
    store, prefix = open_uri(f"file://{allowed_root}/data")
    assert prefix == "data"
    store.write(f"{prefix}/x.csv", b"1")
    assert (allowed_root / "data" / "x.csv").read_bytes() == b"1"
    with pytest.raises(PathEscapeError):
        store.write("../sibling", b"x")


def test_file_uris_outside_the_roots_are_refused(allowed_root: Path, tmp_path: Path) -> None:
    for uri in (f"file://{tmp_path}/other", "file:///etc/passwd", f"file://{allowed_root}/../x"):
        with pytest.raises(PathEscapeError, match="OPENMAKER_FILE_ROOTS"):
            open_uri(uri)
    assert not (tmp_path / "other").exists()


def test_a_symlink_out_of_a_root_is_refused_when_opening(
    allowed_root: Path, tmp_path: Path
) -> None:
    (tmp_path / "secret").mkdir()
    (allowed_root / "innocent").symlink_to(tmp_path / "secret")
    with pytest.raises(PathEscapeError):
        open_uri(f"file://{allowed_root}/innocent/new-file")


def test_mounted_listing_walks_only_the_prefix(tmp_path: Path) -> None:
    store = MountedFileStore(tmp_path)
    for key in ("a/1", "a/2/x", "ab/3", "b/4"):
        store.write(key, b".")
    assert list(store.list("a/")) == ["a/1", "a/2/x"]
    assert list(store.list("a")) == ["a/1", "a/2/x", "ab/3"]
    assert list(store.list("zzz/")) == []
    assert list(store.list("../")) == []


# --- check_uri ------------------------------------------------------------------------------


def _rule(uri: str) -> str:
    with pytest.raises(ValidationError) as caught:
        check_uri(uri, "dataUri")
    (detail,) = caught.value.details
    assert detail["field"] == "dataUri"
    assert caught.value.message.startswith("invalid dataUri: ")
    return str(detail["rule"])


def test_check_uri_accepts_usable_uris_without_touching_the_network(
    allowed_root: Path, nas_mounts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENMAKER_S3_ENDPOINT_URL", "http://192.0.2.1:9")  # TEST-NET: no host
    reset_settings()
    started = time.monotonic()
    check_uri(f"file://{allowed_root}/data/train.csv", "dataUri")
    check_uri(f"file://{allowed_root}", "dataUri")
    check_uri("nas://share-1:/data", "dataUri")
    check_uri("s3://bucket/data", "dataUri")
    check_uri("obs://kr1-api.example.com/container/data", "dataUri")
    assert time.monotonic() - started < 1.0
    assert get_settings().s3_endpoint_url == "http://192.0.2.1:9"


def test_check_uri_refuses_paths_outside_the_roots(allowed_root: Path, tmp_path: Path) -> None:
    assert _rule(f"file://{tmp_path}/elsewhere") == "allowed_roots"
    assert _rule("file:///etc/shadow") == "allowed_roots"
    assert _rule(f"file://{allowed_root}/../allowed-not") == "allowed_roots"


def test_check_uri_follows_symlinks(allowed_root: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (allowed_root / "link").symlink_to(tmp_path / "outside")
    (allowed_root / "real").mkdir()
    (allowed_root / "inner-link").symlink_to(allowed_root / "real")
    assert _rule(f"file://{allowed_root}/link/data") == "allowed_roots"
    check_uri(f"file://{allowed_root}/inner-link/data", "dataUri")


def test_check_uri_refuses_unknown_schemes_and_nas_ids(nas_mounts: Path) -> None:
    assert _rule("http://example.com/data") == "scheme"
    assert _rule("/plain/path") == "scheme"
    assert _rule("gs://bucket/data") == "scheme"
    assert _rule("nas://nope:/data") == "nas_id"
    assert _rule("s3://") == "format"
    assert _rule("nas://share-1") == "format"


def test_check_uri_never_echoes_the_uri(allowed_root: Path) -> None:
    secret = "tok_9f8e7d6c5b4a"
    for uri in (f"file:///var/{secret}", f"nas://{secret}!:/x", f"ftp://{secret}@host/x"):
        with pytest.raises(ValidationError) as caught:
            check_uri(uri, "dataUri")
        assert secret not in repr(caught.value.message) + repr(caught.value.details)
