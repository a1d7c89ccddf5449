"""Object storage over the S3 API: AWS S3, S3-compatible servers (MinIO, moto) at
``OPENMAKER_S3_ENDPOINT_URL``, and NHN Cloud Object Storage through its S3-compatible API.

Credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
a profile, an instance role); nothing here stores or logs them.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from chalicelib.config import get_settings
from chalicelib.errors import (
    BadRequestError,
    ForbiddenError,
    InternalError,
    NotFoundError,
    OpenMakerError,
)
from chalicelib.objectstore.base import ObjectStore, PathEscapeError, clean_key

# DeleteObjects takes at most 1,000 keys per call.
DELETE_BATCH = 1000
_MISSING = {"404", "NoSuchKey", "NotFound"}
_DENIED = {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
# host, host:port or [v6]:port; anything else (userinfo, paths, spaces) is refused.
_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$"
)

_clients: dict[str | None, Any] = {}
_clients_lock = threading.Lock()


def s3_client(endpoint_url: str | None) -> Any:
    """The shared boto3 client for ``endpoint_url`` (None: AWS).

    Creating a client costs ~50 ms and its connection pool is worth keeping, so there is one
    per endpoint per process; boto3 clients are safe to share between threads.
    """
    with _clients_lock:
        client = _clients.get(endpoint_url)
        if client is None:
            client = _new_client(endpoint_url)
            _clients[endpoint_url] = client
        return client


def reset_clients() -> None:
    """Forget cached clients (after credentials or the environment changed)."""
    with _clients_lock:
        _clients.clear()


def _new_client(endpoint_url: str | None) -> Any:
    # boto3 is imported when S3 is first used: job drivers that never touch S3 start faster.
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=10,
        read_timeout=120,
        retries={"max_attempts": 5, "mode": "standard"},
        max_pool_connections=32,
        # Custom endpoints (MinIO, NHN, moto, an IP) rarely resolve bucket subdomains.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
    )
    # A session per client: boto3's default session is not safe to create clients from
    # concurrently.
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


@contextmanager
def _s3_errors(what: str, bucket: str) -> Iterator[None]:
    """Turn boto3's errors into OpenMaker errors that say what to fix."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        raise _from_code(code, what, bucket) from exc
    except S3UploadFailedError as exc:
        # boto3's transfer manager wraps the ClientError in text only.
        code = next((c for c in ("NoSuchBucket", *_DENIED) if c in str(exc)), "")
        raise _from_code(code, what, bucket) from exc
    except NoCredentialsError as exc:
        raise InternalError(
            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or an AWS profile) where the control plane and runners run"
        ) from exc
    except BotoCoreError as exc:
        raise InternalError(
            f"object storage for bucket {bucket} did not answer {what} "
            f"({type(exc).__name__}); check the endpoint and the network"
        ) from exc


def _from_code(code: str, what: str, bucket: str) -> OpenMakerError:
    if code == "NoSuchBucket":
        return NotFoundError(f"bucket {bucket} does not exist; create it or fix the URI")
    if code in _MISSING:
        return NotFoundError(f"{what} not found in bucket {bucket}")
    if code in _DENIED:
        return ForbiddenError(
            f"object storage denied {what} in bucket {bucket} ({code}); "
            "check the credentials and the bucket policy"
        )
    return InternalError(f"object storage failed {what} in bucket {bucket} ({code or 'error'})")


def _object_key(key: str) -> str:
    """A clean, non-empty key: S3 refuses an empty one with an unhelpful parameter error."""
    cleaned = clean_key(key)
    if not cleaned:
        raise BadRequestError("an object key must name an object, not the bucket itself")
    return cleaned


def _addressable(key: str) -> bool:
    """Whether ``key`` is a clean store key: folder markers ("a/"), "a//b" and keys with
    ".." cannot be named through this interface, so listings leave them out."""
    try:
        return clean_key(key) == key
    except PathEscapeError:
        return False


class S3Store:
    """Keys are objects in one bucket; S3's own PUT is atomic, so writes need no staging."""

    delete_batch = DELETE_BATCH

    def __init__(self, bucket: str, *, endpoint_url: str | None, client: Any = None) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.client = client if client is not None else s3_client(endpoint_url)

    def read(self, key: str) -> bytes:
        key = _object_key(key)
        with _s3_errors(f"object {key}", self.bucket):
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            data: bytes = body.read()
        return data

    def write(self, key: str, data: bytes) -> None:
        key = _object_key(key)
        with _s3_errors(f"writing {key}", self.bucket):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def exists(self, key: str) -> bool:
        if not clean_key(key):
            return False
        try:
            self.size(key)
        except NotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        key = _object_key(key)
        with _s3_errors(f"object {key}", self.bucket):
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        return int(head["ContentLength"])

    def list(self, prefix: str = "") -> Iterator[str]:
        return (key for key, _ in self.list_with_sizes(prefix))

    def list_with_sizes(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """Keys under ``prefix`` in lexicographic order with their sizes, one request per
        1,000 keys (transfers use this to check limits without a HEAD per object)."""
        paginator = self.client.get_paginator("list_objects_v2")
        with _s3_errors(f"listing {prefix or 'the bucket'}", self.bucket):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    if _addressable(item["Key"]):
                        yield item["Key"], int(item["Size"])

    def remove(self, key: str) -> None:
        key = _object_key(key)
        with _s3_errors(f"deleting {key}", self.bucket):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def remove_prefix(self, prefix: str) -> int:
        removed = 0
        batch: list[str] = []
        for key in self.list(prefix):
            batch.append(key)
            if len(batch) >= self.delete_batch:
                removed += self._delete(batch)
                batch = []
        if batch:
            removed += self._delete(batch)
        return removed

    def _delete(self, keys: Sequence[str]) -> int:
        with _s3_errors(f"deleting {len(keys)} objects", self.bucket):
            reply = self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
            )
        failed = reply.get("Errors") or []
        if failed:
            first = failed[0]
            raise InternalError(
                f"object storage kept {len(failed)} of {len(keys)} objects in bucket "
                f"{self.bucket} (first: {first.get('Key')}: {first.get('Code')})"
            )
        return len(keys)

    def download_file(self, key: str, path: Path) -> None:
        key = _object_key(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        os.close(fd)
        try:
            with _s3_errors(f"object {key}", self.bucket):
                self.client.download_file(self.bucket, key, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def upload_file(self, path: Path, key: str) -> None:
        key = _object_key(key)
        with _s3_errors(f"uploading {key}", self.bucket):
            self.client.upload_file(str(path), self.bucket, key)


def _malformed(message: str) -> BadRequestError:
    return BadRequestError(message, details=[{"rule": "format", "message": message}])


def _clean_path(path: str, shape: str) -> str:
    try:
        return clean_key(path)
    except PathEscapeError:
        message = f"the path of a {shape} URI must not contain '..' segments"
        raise PathEscapeError(message, details=[{"rule": "format", "message": message}]) from None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/prefix`` as (bucket, clean key prefix); no network."""
    rest = uri[len("s3://") :] if uri.startswith("s3://") else ""
    bucket, _, path = rest.partition("/")
    if not bucket:
        raise _malformed("an s3 URI must name a bucket: s3://{bucket}/{path}")
    return bucket, _clean_path(path, "s3://")


def parse_obs_uri(uri: str) -> tuple[str, str, str]:
    """``obs://{host[:port]}/{container}/{path}`` as (endpoint URL, container, key prefix).

    The Swift-style ``/v1/AUTH_{tenant}`` that NHN Cloud's console shows after the host is
    skipped: the S3-compatible API names the container directly.
    """
    shape = "obs://{host[:port]}/{container}/{path}"
    rest = uri[len("obs://") :] if uri.startswith("obs://") else ""
    host, *segments = rest.split("/")
    if len(segments) >= 2 and segments[0] == "v1" and segments[1].startswith("AUTH_"):
        segments = segments[2:]
    if not host or not _HOST.match(host):
        raise _malformed(f"an obs URI must start with an endpoint host: {shape}")
    if not segments or not segments[0]:
        raise _malformed(f"an obs URI must name a container after the host: {shape}")
    scheme = "http" if get_settings().obs_insecure else "https"
    return f"{scheme}://{host}", segments[0], _clean_path("/".join(segments[1:]), "obs://")


def open_s3_uri(uri: str) -> tuple[ObjectStore, str]:
    bucket, prefix = parse_s3_uri(uri)
    return S3Store(bucket, endpoint_url=get_settings().s3_endpoint_url), prefix


def open_obs_uri(uri: str) -> tuple[ObjectStore, str]:
    endpoint, container, prefix = parse_obs_uri(uri)
    return S3Store(container, endpoint_url=endpoint), prefix
