"""Trainings reading and writing object storage over a real S3 API (moto in server mode)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import boto3
from easymaker.common.parameter import Parameter
from easymaker.training.components import Dataset

from tests.e2e.conftest import RunningPlatform
from tests.e2e.test_sdk_trainings import ENDED, JOBS, experiment_id, run, wait_until

__all__ = ["experiment_id"]  # the fixture, shared


def test_source_dataset_and_outputs_on_s3_and_obs(
    sdk: Any, experiment_id: str, platform: RunningPlatform, s3_endpoint: str, tmp_path: Path
) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    bucket = f"train-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="code/contract.py", Body=(JOBS / "contract.py").read_bytes())
    s3.put_object(Bucket=bucket, Key="data/train/part-0.csv", Body=b"a,label\n1,0\n")
    s3.put_object(Bucket=bucket, Key="data/train/part-1.csv", Body=b"a,label\n2,1\n")
    host = s3_endpoint.split("://", 1)[1]

    started = run(
        sdk,
        experiment_id,
        source_dir_uri=f"s3://{bucket}/code",
        entry_point="contract.py",
        dataset_list=[Dataset(dataset_name="train", data_uri=f"s3://{bucket}/data/train")],
        model_upload_uri=f"s3://{bucket}/out/model",
        check_point_upload_uri=f"obs://{host}/{bucket}/out/ckpt",
    )
    body = wait_until(platform, started.training_id, ENDED)
    assert body["trainingStatusCode"] == "COMPLETE", body
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"])
    assert keys == [
        "out/ckpt/ckpt-0001",
        "out/model/contract.json",
        "out/model/weights/w.bin",
    ]
    seen = json.loads(s3.get_object(Bucket=bucket, Key="out/model/contract.json")["Body"].read())
    assert seen["dataset_files"] == {"TRAIN": ["part-0.csv", "part-1.csv"]}


def test_a_dataset_larger_than_the_data_storage_fails_before_running(
    sdk: Any, experiment_id: str, platform: RunningPlatform, s3_endpoint: str, tmp_path: Path
) -> None:
    big = tmp_path / "big"
    big.mkdir()
    (big / "blob.bin").write_bytes(b"")
    with (big / "blob.bin").open("wb") as handle:  # sparse: 11 GB on paper, nothing on disk
        handle.truncate(11 * 10**9)
    src = tmp_path / "src"
    src.mkdir()
    (src / "contract.py").write_bytes((JOBS / "contract.py").read_bytes())
    started = run(
        sdk,
        experiment_id,
        source_dir_uri=f"file://{src}",
        entry_point="contract.py",
        dataset_list=[Dataset(dataset_name="train", data_uri=f"file://{big}")],
        data_storage_size=10,
        model_upload_uri=f"file://{tmp_path / 'model'}",
    )
    body = wait_until(platform, started.training_id, ENDED)
    assert body["trainingStatusCode"] == "CREATE_FAILED", body
    assert "10" in body["statusReason"] and "RUNNING" not in body["_seen"]


def test_a_stop_during_the_upload_ends_stopped_and_publishes_nothing(
    sdk: Any, experiment_id: str, platform: RunningPlatform, s3_endpoint: str, tmp_path: Path
) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    bucket = f"stop-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    src = tmp_path / "src"
    src.mkdir()
    (src / "many_files.py").write_bytes((JOBS / "many_files.py").read_bytes())
    started = run(
        sdk,
        experiment_id,
        source_dir_uri=f"file://{src}",
        entry_point="many_files.py",
        hyperparameter_list=[Parameter(parameter_name="files", parameter_value="800")],
        model_upload_uri=f"s3://{bucket}/out/model",
    )
    uploading = wait_until(
        platform, started.training_id, {"COMPLETE_IN_PROGRESS", *ENDED}, timeout=60
    )
    assert uploading["trainingStatusCode"] == "COMPLETE_IN_PROGRESS", uploading
    sdk.Training(started.training_id).stop()
    body = wait_until(platform, started.training_id, ENDED, timeout=60)
    assert body["trainingStatusCode"] == "STOPPED", body
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="out/")
    assert listed.get("KeyCount", 0) == 0  # no half-published model
