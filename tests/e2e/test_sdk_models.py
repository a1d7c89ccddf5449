"""Models through the unmodified ``easymaker`` SDK: from an artifact URI and from a training
it ran, waited to ACTIVE by the SDK itself (the platform's tick checks the artifact)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from easymaker.common import exceptions
from easymaker.common.base_model import easymaker_base_model
from easymaker.common.parameter import Parameter

from tests.e2e.conftest import RunningPlatform
from tests.e2e.test_sdk_trainings import _QuickSleep, experiment_id, run, source_dir, unique

__all__ = ["experiment_id"]  # the fixture, shared


def model(platform: RunningPlatform, model_id: str) -> requests.Response:
    return requests.get(
        f"{platform.api_url}/models/{model_id}", headers=platform.auth_headers, timeout=10
    )


def test_a_model_from_a_uri_becomes_active_and_is_deleted_through_the_sdk(
    sdk: Any, platform: RunningPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(easymaker_base_model, "time", _QuickSleep)
    folder = tmp_path / "iris"
    folder.mkdir()
    (folder / "model.joblib").write_bytes(b"\x80\x04 a pickled estimator would be here")
    created = sdk.Model().create(
        model_name=unique("iris"),
        model_format_code="SKLEARN",
        model_upload_uri=f"file://{folder}",
        parameter_list=[Parameter(parameter_name="batch-size", parameter_value="8")],
        wait=True,
    )

    assert created.model_status_code == "ACTIVE"
    assert created.model_upload_uri == f"file://{folder}"
    assert created.model_id in {m.model_id for m in sdk.Model.get_list()}
    created.delete()
    assert model(platform, created.model_id).status_code == 404


def test_an_unreadable_artifact_fails_the_sdks_wait(
    sdk: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(easymaker_base_model, "time", _QuickSleep)
    with pytest.raises(exceptions.EasyMakerError, match="CREATE_FAILED"):
        sdk.Model().create(
            model_name=unique("gone"),
            model_format_code="PYTORCH",
            model_upload_uri=f"file://{tmp_path / 'nothing'}",
            wait=True,
        )


def test_a_model_from_a_completed_training_holds_it_until_the_model_goes(
    sdk: Any,
    experiment_id: str,
    platform: RunningPlatform,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(easymaker_base_model, "time", _QuickSleep)
    src = source_dir(tmp_path, "objective.py")
    out = tmp_path / "model"
    done = run(
        sdk,
        experiment_id,
        source_dir_uri=f"file://{src}",
        entry_point="objective.py",
        hyperparameter_list=[Parameter(parameter_name="x", parameter_value="2")],
        model_upload_uri=f"file://{out}",
        wait=True,
    )
    assert done.training_status_code == "COMPLETE"

    made = sdk.Model().create(model_name=unique("from-training"), training_id=done.training_id)

    assert made.model_status_code == "ACTIVE"
    body = model(platform, made.model_id).json()["model"]
    assert body["modelUploadUri"] == f"file://{out}"
    assert body["modelFormatCode"] == "PYTORCH"  # the training image's framework
    assert body["training"]["trainingId"] == done.training_id
    refused = requests.delete(
        f"{platform.api_url}/trainings/{done.training_id}",
        headers=platform.auth_headers,
        timeout=10,
    )
    assert refused.status_code == 409, refused.text
    assert "model(s)" in refused.json()["header"]["resultMessage"]
    made.delete()
    gone = requests.delete(
        f"{platform.api_url}/trainings/{done.training_id}",
        headers=platform.auth_headers,
        timeout=10,
    )
    assert gone.status_code == 200, gone.text
