"""/models over the in-process app: create from a URI, a COMPLETE training or a COMPLETE
tuning's best trial, or a Hugging Face hub model id (checked against a fake hub on loopback);
the tick's artifact check (ACTIVE or CREATE_FAILED); bad input that creates nothing; trainings
and tunings that refuse deletion while a model comes from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from chalicelib import crypto, errors
from chalicelib.dispatch.fake import FakeBackend
from chalicelib.domain.model import HUGGING_FACE_TASKS
from chalicelib.services import models as model_service
from chalicelib.store import models
from chalicelib.store.db import Database
from tests.integration import trainings_fixtures, tunings_fixtures
from tests.integration.conftest import ApiClient, assert_error, snapshot_tables
from tests.integration.test_trainings_api import create as create_training
from tests.integration.test_trainings_api import finish as finish_training
from tests.integration.test_tunings_api import create as create_tuning
from tests.integration.test_tunings_api import finish as finish_tuning
from tests.integration.test_tunings_api import moved, report, trial
from tests.integration.trainings_fixtures import Bodies
from tests.integration.tunings_fixtures import TuningBodies
from tests.serving.fake_hub import FakeHub, pickle_only_repo, safetensors_repo
from tests.serving.fake_hub import fake_hub as fake_hub  # the fixture

file_root = trainings_fixtures.file_root
use_backend = trainings_fixtures.use_backend
ray = trainings_fixtures.ray
bodies = trainings_fixtures.bodies
tuning_bodies = tunings_fixtures.tuning_bodies

MODELS = "/models"
VALIDATION = errors.ValidationError.result_code
NOT_FOUND = errors.NotFoundError.result_code
DEPENDENT = errors.DependentResourceError.result_code
DUPLICATE = errors.DuplicateNameError.result_code


def artifact(root: Path, relative: str) -> str:
    """A model folder with one file below the allowed root, as a file:// URI."""
    folder = root / relative
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.joblib").write_bytes(b"not really a model, but bytes to read")
    return f"file://{folder}"


def create(api: ApiClient, **body: Any) -> dict[str, Any]:
    reply = api.post(MODELS, body)
    assert reply.status == 201, reply.body
    model: dict[str, Any] = reply.body["model"]
    return model


def get(api: ApiClient, model_id: str) -> dict[str, Any]:
    reply = api.get(f"{MODELS}/{model_id}")
    assert reply.status == 200, reply.body
    model: dict[str, Any] = reply.body["model"]
    return model


def checked(api: ApiClient, db: Database, model_id: str) -> dict[str, Any]:
    """The model after the tick's artifact check."""
    model_service.reconcile(db)
    return get(api, model_id)


def test_a_model_from_a_uri_is_requested_then_active_once_its_artifact_is_read(
    api: ApiClient, db: Database, file_root: Path
) -> None:
    uri = artifact(file_root, "models/iris")
    model = create(
        api,
        modelName="iris",
        description="sklearn iris",
        modelFormatCode="SKLEARN",
        frameworkVersion="1.5.2",
        modelUploadUri=uri,
        parameterList=[{"parameterName": "max-batch", "parameterValue": 8}],
        tagList=[{"tagKey": "team", "tagValue": "ml"}],
    )
    assert model["modelStatusCode"] == "CREATE_REQUESTED"
    assert model["modelUploadUri"] == uri and model["modelFormatCode"] == "SKLEARN"
    assert model["parameterList"] == [{"parameterName": "max-batch", "parameterValue": "8"}]
    assert model["training"] is None and model["hyperparameterTuning"] is None

    active = checked(api, db, model["modelId"])

    assert active["modelStatusCode"] == "ACTIVE", active
    assert active["statusReason"] is None and active["frameworkVersion"] == "1.5.2"
    listed = api.get(MODELS, query={"modelStatusCodeList": "ACTIVE"})
    assert [m["modelName"] for m in listed.body["modelList"]] == ["iris"]
    assert listed.body["paging"]["totalCount"] == 1


def test_a_missing_or_unreadable_artifact_fails_the_creation_with_the_reason(
    api: ApiClient, db: Database, file_root: Path
) -> None:
    missing = create(
        api,
        modelName="missing",
        modelFormatCode="PYTORCH",
        modelUploadUri=f"file://{file_root}/nothing/here",
    )
    empty_folder = file_root / "models" / "empty"
    empty_folder.mkdir(parents=True)
    empty = create(
        api, modelName="empty", modelFormatCode="PYTORCH", modelUploadUri=f"file://{empty_folder}"
    )

    failed = checked(api, db, missing["modelId"])
    also_failed = get(api, empty["modelId"])

    assert failed["modelStatusCode"] == "CREATE_FAILED"
    assert "missing" in failed["statusReason"]
    assert also_failed["modelStatusCode"] == "CREATE_FAILED"
    assert api.delete(f"{MODELS}/{missing['modelId']}").status == 200  # a failed one goes
    assert_error(api.get(f"{MODELS}/{missing['modelId']}"), 404, NOT_FOUND)


def test_a_model_from_a_complete_training_takes_its_output_and_holds_the_training(
    api: ApiClient, db: Database, bodies: Bodies, ray: FakeBackend
) -> None:
    training = create_training(api, bodies.own_code("digits"))
    training_id = training["trainingId"]
    early = api.post(MODELS, {"modelName": "digits", "trainingId": training_id})
    assert_error(early, 400, VALIDATION, field="trainingId", rule="status")

    finish_training(api, training_id)
    Path(training["modelUploadUri"].removeprefix("file://")).mkdir(parents=True)
    (Path(training["modelUploadUri"].removeprefix("file://")) / "model.pt").write_bytes(b"w")
    model = create(api, modelName="digits", trainingId=training_id)

    assert model["modelUploadUri"] == training["modelUploadUri"]
    assert model["modelFormatCode"] == "PYTORCH"  # from the training's image
    assert model["training"] == {"trainingId": training_id, "trainingName": "digits"}
    assert checked(api, db, model["modelId"])["modelStatusCode"] == "ACTIVE"
    refused = api.delete(f"/trainings/{training_id}")
    assert_error(refused, 409, DEPENDENT)
    assert "1 model(s)" in refused.header["resultMessage"]

    assert api.delete(f"{MODELS}/{model['modelId']}").status == 200
    assert api.delete(f"/trainings/{training_id}").status == 200


def test_a_model_from_a_complete_tuning_takes_its_best_trials_folder(
    api: ApiClient, db: Database, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning = create_tuning(api, tuning_bodies.own_code("ranked"))
    tuning_id = tuning["hyperparameterTuningId"]
    assert report(api, tuning_id, "RUNNING").status == 200
    for number, accuracy in ((0, 0.7), (1, 0.9), (2, 0.8)):
        params = {"learning_rate": f"0.0{number + 1}", "optimizer": "sgd"}
        assert trial(api, tuning_id, number, params=params).status == 200
        moved(api, tuning_id, number, "RUNNING")
        metrics = {"accuracy": {"min": accuracy, "max": accuracy, "latest": accuracy}}
        moved(api, tuning_id, number, "SUCCEEDED", metrics=metrics, objectiveValue=accuracy)
    early = api.post(MODELS, {"modelName": "ranked", "hyperparameterTuningId": tuning_id})
    assert_error(early, 400, VALIDATION, field="hyperparameterTuningId", rule="status")
    finish_tuning(api, tuning_id)

    model = create(api, modelName="ranked", hyperparameterTuningId=tuning_id)

    assert model["modelUploadUri"] == f"{tuning['modelUploadUri']}/trials/1"
    assert model["trialNumber"] == 1
    assert model["hyperparameterTuning"] == {
        "hyperparameterTuningId": tuning_id,
        "hyperparameterTuningName": "ranked",
    }
    failed = checked(api, db, model["modelId"])  # nothing was written there in this test
    assert failed["modelStatusCode"] == "CREATE_FAILED"
    assert_error(api.delete(f"/hyperparameter-tunings/{tuning_id}"), 409, DEPENDENT)
    assert api.delete(f"{MODELS}/{model['modelId']}").status == 200
    assert api.delete(f"/hyperparameter-tunings/{tuning_id}").status == 200


def test_a_tuning_without_a_successful_trial_gives_no_model(
    api: ApiClient, tuning_bodies: TuningBodies, ray: FakeBackend
) -> None:
    tuning_id = create_tuning(api, tuning_bodies.own_code("fruitless"))["hyperparameterTuningId"]
    finish_tuning(api, tuning_id)
    reply = api.post(MODELS, {"modelName": "none", "hyperparameterTuningId": tuning_id})
    assert_error(reply, 400, VALIDATION, field="hyperparameterTuningId", rule="best_trial")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"modelName": "x", "modelFormatCode": "SKLEARN"}, "modelUploadUri"),
        ({"modelName": "x", "modelUploadUri": "@uri"}, "modelFormatCode"),
        (
            {"modelName": "x", "modelFormatCode": "TRITON", "modelUploadUri": "@uri"},
            "modelFormatCode",
        ),
        (
            {"modelName": "x", "modelFormatCode": "SKLEARN", "modelUploadUri": "/etc"},
            "modelUploadUri",
        ),
        (
            {"modelName": "x", "modelFormatCode": "SKLEARN", "modelUploadUri": "file:///etc"},
            "modelUploadUri",
        ),
        (
            {
                "modelName": "x",
                "modelFormatCode": "SKLEARN",
                "modelUploadUri": "@uri",
                "trainingId": "00000000-0000-0000-0000-000000000000",
            },
            "trainingId",
        ),
        ({"modelName": "x", "fineTuningId": "f", "modelFormatCode": "SKLEARN"}, "fineTuningId"),
        (
            {"modelName": "bad name!", "modelFormatCode": "SKLEARN", "modelUploadUri": "@uri"},
            "modelName",
        ),
        (
            {
                "modelName": "x",
                "modelFormatCode": "SKLEARN",
                "modelUploadUri": "@uri",
                "parameterList": [
                    {"parameterName": "max-len", "parameterValue": "1"},
                    {"parameterName": "MAX_LEN", "parameterValue": "2"},
                ],
            },
            "parameterList",
        ),
    ],
    ids=[
        "no source",
        "uri without framework",
        "unserved framework",
        "not a uri",
        "outside the file roots",
        "two sources",
        "fine-tuning",
        "bad name",
        "parameters clash as variables",
    ],
)
def test_bad_input_is_a_400_that_creates_nothing(
    api: ApiClient, db: Database, file_root: Path, body: dict[str, Any], field: str
) -> None:
    uri = artifact(file_root, "models/ok")
    body = {k: (uri if v == "@uri" else v) for k, v in body.items()}
    before = snapshot_tables(db)

    reply = api.post(MODELS, body)

    assert_error(reply, 400, VALIDATION, field=field)
    assert snapshot_tables(db) == before


def test_names_are_unique_per_appkey_and_another_tenant_sees_nothing(
    api: ApiClient, other_api: ApiClient, db: Database, file_root: Path
) -> None:
    uri = artifact(file_root, "models/one")
    first = create(api, modelName="one", modelFormatCode="SKLEARN", modelUploadUri=uri)
    again = api.post(
        MODELS, {"modelName": "one", "modelFormatCode": "SKLEARN", "modelUploadUri": uri}
    )
    assert_error(again, 409, DUPLICATE)
    theirs = create(other_api, modelName="one", modelFormatCode="SKLEARN", modelUploadUri=uri)

    assert_error(other_api.get(f"{MODELS}/{first['modelId']}"), 404, NOT_FOUND)
    assert_error(other_api.delete(f"{MODELS}/{first['modelId']}"), 404, NOT_FOUND)
    assert [m["modelId"] for m in api.get(MODELS).body["modelList"]] == [first["modelId"]]
    assert [m["modelId"] for m in other_api.get(MODELS).body["modelList"]] == [theirs["modelId"]]


def test_a_model_being_created_is_not_deleted_and_an_update_renames_it(
    api: ApiClient, db: Database, file_root: Path
) -> None:
    uri = artifact(file_root, "models/renamed")
    model = create(api, modelName="before", modelFormatCode="SKLEARN", modelUploadUri=uri)
    assert_error(api.delete(f"{MODELS}/{model['modelId']}"), 409, DEPENDENT)

    updated = api.put(
        f"{MODELS}/{model['modelId']}", {"modelName": "after", "description": "renamed"}
    )

    assert updated.status == 200, updated.body
    assert updated.body["model"]["modelName"] == "after"
    assert checked(api, db, model["modelId"])["modelStatusCode"] == "ACTIVE"
    assert api.delete(f"{MODELS}/{model['modelId']}").status == 200


def test_a_token_parameter_is_encrypted_at_rest_and_never_returned(
    api: ApiClient, db: Database, file_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = "hf_gated_model_token_1234567890"
    uri = artifact(file_root, "models/gated")
    model = create(
        api,
        modelName="gated",
        modelFormatCode="HUGGING_FACE",
        modelUploadUri=uri,
        parameterList=[
            {"parameterName": "hf_token", "parameterValue": token},
            {"parameterName": "task", "parameterValue": "fill_mask"},
        ],
    )
    checked(api, db, model["modelId"])

    shown = [
        model["parameterList"],
        get(api, model["modelId"])["parameterList"],
        api.get(MODELS).body["modelList"][0]["parameterList"],
    ]
    assert all(
        listed
        == [
            {"parameterName": "hf_token", "parameterValue": crypto.MASK},
            {"parameterName": "task", "parameterValue": "fill_mask"},
        ]
        for listed in shown
    ), shown
    database_file = Path(str(make_url(db.url).database))
    stored = b"".join(  # the database and its write-ahead log
        path.read_bytes() for path in database_file.parent.glob(f"{database_file.name}*")
    )
    assert token.encode() not in stored and b"fill_mask" in stored  # the rest is there
    with db.session(read_only=True) as session:
        row = session.get(models.Model, model["modelId"])
        assert row is not None
        assert model_service.runtime_parameters(row) == [
            ("hf_token", token),
            ("task", "fill_mask"),
        ]
    assert token not in caplog.text


# -- Hugging Face models from a hub model id (a fake hub on loopback) --------------------------

HUB_TOKEN = "hf_gated_access_token_0987654321"


@pytest.fixture
def hub(fake_hub: FakeHub, tmp_path: Path) -> FakeHub:
    fake_hub.add("org/tiny", safetensors_repo(tmp_path / "hub" / "tiny"), revisions=("main", "v1"))
    fake_hub.add("org/pickled", pickle_only_repo(tmp_path / "hub" / "pickled"))
    fake_hub.add("org/gated", safetensors_repo(tmp_path / "hub" / "gated"), token=HUB_TOKEN)
    fake_hub.add("org/bert", safetensors_repo(tmp_path / "hub" / "bert"), pipeline_tag="fill-mask")
    fake_hub.add(
        "org/summarizer",
        safetensors_repo(tmp_path / "hub" / "summarizer"),
        pipeline_tag="summarization",
    )
    return fake_hub


def hub_body(name: str, *parameters: tuple[str, str]) -> dict[str, Any]:
    """What ``Model().create_hugging_face_model`` sends: no modelUploadUri."""
    return {
        "modelName": name,
        "modelFormatCode": "HUGGING_FACE",
        "description": "from the hub",
        "parameterList": [{"parameterName": n, "parameterValue": v} for n, v in parameters],
    }


def test_a_hugging_face_model_from_a_hub_id_is_active_once_the_hub_has_its_safetensors(
    api: ApiClient, db: Database, hub: FakeHub
) -> None:
    reply = api.post(MODELS, hub_body("tiny", ("model_id", "org/tiny"), ("task", "fill_mask")))
    assert reply.status == 201, reply.body
    model = reply.body["model"]
    pinned = create(
        api,
        **hub_body("pinned", ("model-id", "org/tiny"), ("revision", "v1"), ("TASK", "fill_mask")),
    )

    assert model["modelStatusCode"] == "CREATE_REQUESTED"
    assert model["modelUploadUri"] == "hf://org/tiny"
    assert model["modelFormatCode"] == "HUGGING_FACE"
    assert pinned["modelUploadUri"] == "hf://org/tiny@v1"
    active = checked(api, db, model["modelId"])
    assert active["modelStatusCode"] == "ACTIVE", active
    assert active["statusReason"] is None
    assert get(api, pinned["modelId"])["modelStatusCode"] == "ACTIVE"
    assert hub.downloaded() == []  # the check lists the repo; pods download


def test_a_hub_model_without_a_task_takes_the_one_its_pipeline_tag_names(
    api: ApiClient, db: Database, hub: FakeHub
) -> None:
    sdk_sample = {  # create_model_from_huggingface_id.ipynb: a model_id and nothing else
        "modelName": "bert",
        "modelFormatCode": "HUGGING_FACE",
        "parameterList": [{"parameterName": "model_id", "parameterValue": "org/bert"}],
    }
    model = create(api, **sdk_sample)
    assert model["modelStatusCode"] == "CREATE_REQUESTED"
    assert model["parameterList"] == sdk_sample["parameterList"]

    active = checked(api, db, model["modelId"])

    assert active["modelStatusCode"] == "ACTIVE", active
    assert active["parameterList"] == [
        {"parameterName": "model_id", "parameterValue": "org/bert"},
        {"parameterName": "task", "parameterValue": "fill_mask"},
    ]
    with db.session(read_only=True) as session:
        row = session.get(models.Model, model["modelId"])
        assert row is not None and row.version == 3  # claimed, then one move to ACTIVE
        assert model_service.runtime_parameters(row) == [
            ("model_id", "org/bert"),
            ("task", "fill_mask"),
        ]


def test_a_hub_model_whose_pipeline_tag_is_not_served_fails_naming_it(
    api: ApiClient, db: Database, hub: FakeHub
) -> None:
    model = create(api, **hub_body("summarizer", ("model_id", "org/summarizer")))

    failed = checked(api, db, model["modelId"])

    assert failed["modelStatusCode"] == "CREATE_FAILED"
    reason = failed["statusReason"]
    assert "its pipeline tag 'summarization' is not a task served here" in reason
    assert "give a task parameter" in reason
    assert all(task in reason for task in HUGGING_FACE_TASKS)
    assert failed["parameterList"] == model["parameterList"]  # nothing taken


def test_a_hub_model_with_only_pickle_weights_fails_with_the_safetensors_reason(
    api: ApiClient, db: Database, hub: FakeHub
) -> None:
    model = create(
        api, **hub_body("pickled", ("hf_model_id", "org/pickled"), ("task", "fill_mask"))
    )

    failed = checked(api, db, model["modelId"])

    assert failed["modelStatusCode"] == "CREATE_FAILED"
    assert "only safetensors weights are served" in failed["statusReason"]
    assert "pytorch_model.bin" in failed["statusReason"]


def test_a_gated_hub_model_needs_its_token_which_is_never_shown(
    api: ApiClient, db: Database, hub: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    without = create(api, **hub_body("no-token", ("model_id", "org/gated"), ("task", "fill_mask")))
    wrong = create(
        api,
        **hub_body(
            "wrong-token",
            ("model_id", "org/gated"),
            ("task", "fill_mask"),
            ("hf_token", "hf_not_the_right_one_123456"),
        ),
    )
    with_token = create(
        api,
        **hub_body(
            "with-token",
            ("model_id", "org/gated"),
            ("task", "sequence_classification"),
            ("hf_token", HUB_TOKEN),
        ),
    )

    model_service.reconcile(db)

    refused, refused_again = get(api, without["modelId"]), get(api, wrong["modelId"])
    assert refused["modelStatusCode"] == "CREATE_FAILED"
    assert "gated model: give an hf_token parameter with access" in refused["statusReason"]
    assert refused_again["modelStatusCode"] == "CREATE_FAILED"
    assert "403" in refused_again["statusReason"]
    active = get(api, with_token["modelId"])
    assert active["modelStatusCode"] == "ACTIVE", active
    assert {"parameterName": "hf_token", "parameterValue": crypto.MASK} in active["parameterList"]
    assert HUB_TOKEN not in str(api.get(MODELS).body) and HUB_TOKEN not in str(with_token)
    assert HUB_TOKEN not in caplog.text
    assert any(r.authorized for r in hub.requests if "org/gated" in r.path)


@pytest.mark.parametrize(
    ("parameters", "rule"),
    [
        ((("model_id", "org/../etc"), ("task", "fill_mask")), "hub_model_id"),
        ((("model_id", "a/b/c"), ("task", "fill_mask")), "hub_model_id"),
        ((("model_id", "org/" + "x" * 97), ("task", "fill_mask")), "hub_model_id"),
        ((("model_id", "org/tiny"), ("task", "summarization")), "hub_task"),
        ((("model_id", "org/tiny"), ("task", "fill_mask"), ("revision", "../x")), "hub_revision"),
    ],
    ids=["dots", "three parts", "too long", "unsupported task", "bad revision"],
)
def test_a_bad_hub_model_is_a_400_naming_the_rule_that_creates_nothing(
    api: ApiClient, db: Database, hub: FakeHub, parameters: tuple[tuple[str, str], ...], rule: str
) -> None:
    before = snapshot_tables(db)

    reply = api.post(MODELS, hub_body("bad", *parameters))

    assert_error(reply, 400, VALIDATION, field="parameterList", rule=rule)
    if rule == "hub_task":
        assert all(task in reply.header["resultMessage"] for task in HUGGING_FACE_TASKS)
    assert snapshot_tables(db) == before
    assert hub.requests == []  # nothing asked of the hub in a request


def test_a_model_id_is_no_source_for_another_framework_nor_beside_a_uri(
    api: ApiClient, db: Database, file_root: Path
) -> None:
    before = snapshot_tables(db)
    not_hf = hub_body("sk", ("model_id", "org/tiny"), ("task", "fill_mask"))
    not_hf["modelFormatCode"] = "SKLEARN"
    both = hub_body("both", ("model_id", "org/tiny"), ("task", "fill_mask"))
    both["modelUploadUri"] = artifact(file_root, "models/hf")

    assert_error(
        api.post(MODELS, not_hf), 400, VALIDATION, field="modelUploadUri", rule="required"
    )
    assert_error(api.post(MODELS, both), 400, VALIDATION, field="parameterList", rule="one_source")
    assert snapshot_tables(db) == before
