"""Bad input gets a clear 4xx in the envelope, names the field and rule, and changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from chalicelib import errors
from chalicelib.store.db import Database
from tests.integration.conftest import (
    ApiClient,
    Reply,
    TrainingCatalog,
    assert_error,
    snapshot_tables,
)

SECRET = "omk_SECRET_c2VjcmV0LXRva2VuLXRoYXQtbXVzdC1uZXZlci1lY2hv"

VALIDATION = errors.ValidationError.result_code
MALFORMED = errors.MalformedBodyError.result_code
NOT_FOUND = errors.NotFoundError.result_code
NO_ROUTE = errors.RouteNotFoundError.result_code
NO_METHOD = errors.MethodNotAllowedError.result_code


@dataclass(frozen=True)
class Existing:
    experiment_id: str
    template_id: str


@pytest.fixture
def existing(api: ApiClient, catalog: TrainingCatalog) -> Existing:
    """One experiment and one template, so 'nothing changed' compares against real rows."""
    experiment = api.post(
        "/experiments",
        {"experimentName": "existing", "tagList": [{"tagKey": "team", "tagValue": "a"}]},
    )
    template = api.post("/training-templates", catalog.own_code_body("existing-template"))
    assert experiment.status == 201 and template.status == 201, (experiment.body, template.body)
    return Existing(
        experiment.body["experiment"]["experimentId"],
        template.body["trainingTemplate"]["trainingTemplateId"],
    )


@dataclass(frozen=True)
class Bad:
    """One bad request and the error it must get.

    ``template`` (a dict of overrides) builds the body from a valid own-code template,
    ``algorithm`` from a valid built-in-algorithm template; ``body``/``raw`` are sent as is.
    """

    method: str
    path: str
    status: int
    code: int
    field: str | None = None
    rule: str | None = None
    body: Any = None
    raw: bytes | None = None
    template: dict[str, Any] | None = None
    algorithm: dict[str, Any] | None = None
    query: dict[str, str] | None = None


def _tags(n: int) -> list[dict[str, str]]:
    return [{"tagKey": f"k{i}", "tagValue": "v"} for i in range(n)]


def _hyperparameters(n: int) -> list[dict[str, str]]:
    return [{"parameterName": f"p{i}", "parameterValue": "1"} for i in range(n)]


def _datasets(n: int) -> list[dict[str, str]]:
    return [{"datasetName": f"d{i}", "dataUri": f"file:///srv/data/{i}"} for i in range(n)]


EXP = "/experiments"
ONE_EXP = "/experiments/{experiment_id}"
TPL = "/training-templates"
ONE_TPL = "/training-templates/{template_id}"
UNKNOWN_ID = "00000000-0000-0000-0000-000000000000"

EXPERIMENT_CASES: dict[str, Bad] = {
    "malformed json": Bad("POST", EXP, 400, MALFORMED, "request body", "json_invalid", raw=b"{"),
    "truncated json": Bad(
        "POST", EXP, 400, MALFORMED, "request body", "json_invalid", raw=b'{"experimentName": "x'
    ),
    "bytes that are not utf-8": Bad("POST", EXP, 400, MALFORMED, raw=b"\xff\xfe\x00"),
    "a json list": Bad("POST", EXP, 400, VALIDATION, "request body", "model_type", body=[1, 2]),
    "a json string": Bad("POST", EXP, 400, VALIDATION, "request body", "model_type", body="x"),
    "json null": Bad("POST", EXP, 400, VALIDATION, "request body", "model_type", raw=b"null"),
    "an empty body": Bad("POST", EXP, 400, VALIDATION, "experimentName", "missing", raw=b""),
    "a numeric name": Bad(
        "POST", EXP, 400, VALIDATION, "experimentName", "string_type", body={"experimentName": 5}
    ),
    "a string tag list": Bad(
        "POST",
        EXP,
        400,
        VALIDATION,
        "tagList",
        "list_type",
        body={"experimentName": "a", "tagList": "x"},
    ),
    "a 51 character name": Bad(
        "POST",
        EXP,
        400,
        VALIDATION,
        "experimentName",
        "string_too_long",
        body={"experimentName": "n" * 51},
    ),
    "an empty name": Bad(
        "POST",
        EXP,
        400,
        VALIDATION,
        "experimentName",
        "string_too_short",
        body={"experimentName": ""},
    ),
    "a name with a space": Bad(
        "POST",
        EXP,
        400,
        VALIDATION,
        "experimentName",
        "string_pattern_mismatch",
        body={"experimentName": "my experiment"},
    ),
    "a name with a slash": Bad(
        "POST",
        EXP,
        400,
        VALIDATION,
        "experimentName",
        "string_pattern_mismatch",
        body={"experimentName": "a/b"},
    ),
    "a name starting with a dash": Bad(
        "POST",
        EXP,
        400,
        VALIDATION,
        "experimentName",
        "string_pattern_mismatch",
        body={"experimentName": "-a"},
    ),
    "eleven tags": Bad(
        "POST",
        EXP,
        400,
        VALIDATION,
        "tagList",
        "too_long",
        body={"experimentName": "a", "tagList": _tags(11)},
    ),
    "duplicate tag keys": Bad(
        "POST",
        EXP,
        400,
        VALIDATION,
        "tagList",
        "value_error",
        body={"experimentName": "a", "tagList": [{"tagKey": "k"}, {"tagKey": "k"}]},
    ),
    "a tag without a key": Bad(
        "POST",
        EXP,
        400,
        VALIDATION,
        "tagList.0.tagKey",
        "missing",
        body={"experimentName": "a", "tagList": [{"tagValue": "v"}]},
    ),
    "a 256 character description": Bad(
        "POST",
        EXP,
        400,
        VALIDATION,
        "description",
        "string_too_long",
        body={"experimentName": "a", "description": "d" * 256},
    ),
    "update with malformed json": Bad(
        "PUT", ONE_EXP, 400, MALFORMED, "request body", "json_invalid", raw=b"{]"
    ),
    "update with a numeric name": Bad(
        "PUT",
        ONE_EXP,
        400,
        VALIDATION,
        "experimentName",
        "string_type",
        body={"experimentName": 5},
    ),
    "update with a string tag list": Bad(
        "PUT", ONE_EXP, 400, VALIDATION, "tagList", "list_type", body={"tagList": "x"}
    ),
    "update with eleven tags": Bad(
        "PUT", ONE_EXP, 400, VALIDATION, "tagList", "too_long", body={"tagList": _tags(11)}
    ),
    "update with a json list": Bad(
        "PUT", ONE_EXP, 400, VALIDATION, "request body", "model_type", body=[]
    ),
    "update into a slashed name": Bad(
        "PUT",
        ONE_EXP,
        400,
        VALIDATION,
        "experimentName",
        "string_pattern_mismatch",
        body={"experimentName": "x/y"},
    ),
}

TEMPLATE_CASES: dict[str, Bad] = {
    "malformed json": Bad("POST", TPL, 400, MALFORMED, "request body", "json_invalid", raw=b"[{"),
    "a json list": Bad("POST", TPL, 400, VALIDATION, "request body", "model_type", body=[]),
    "a json string": Bad(
        "POST", TPL, 400, VALIDATION, "request body", "model_type", body="template"
    ),
    "an empty body": Bad("POST", TPL, 400, VALIDATION, "trainingTemplateName", "missing", raw=b""),
    "a word for instanceCount": Bad(
        "POST",
        TPL,
        400,
        VALIDATION,
        "instanceCount",
        "int_parsing",
        template={"instanceCount": "many"},
    ),
    "a numeric template name": Bad(
        "POST",
        TPL,
        400,
        VALIDATION,
        "trainingTemplateName",
        "string_type",
        template={"trainingTemplateName": 5},
    ),
    "a 51 character template name": Bad(
        "POST",
        TPL,
        400,
        VALIDATION,
        "trainingTemplateName",
        "string_too_long",
        template={"trainingTemplateName": "t" * 51},
    ),
    "an empty template name": Bad(
        "POST",
        TPL,
        400,
        VALIDATION,
        "trainingTemplateName",
        "string_too_short",
        template={"trainingTemplateName": ""},
    ),
    "a template name with spaces": Bad(
        "POST",
        TPL,
        400,
        VALIDATION,
        "trainingTemplateName",
        "string_pattern_mismatch",
        template={"trainingTemplateName": "my template"},
    ),
    "a string tag list": Bad(
        "POST", TPL, 400, VALIDATION, "tagList", "list_type", template={"tagList": "x"}
    ),
    "eleven tags": Bad(
        "POST", TPL, 400, VALIDATION, "tagList", "too_long", template={"tagList": _tags(11)}
    ),
    "duplicate tag keys": Bad(
        "POST",
        TPL,
        400,
        VALIDATION,
        "tagList",
        "value_error",
        template={"tagList": [{"tagKey": "k", "tagValue": "1"}, {"tagKey": "k", "tagValue": "2"}]},
    ),
    "101 hyperparameters": Bad(
        "POST",
        TPL,
        400,
        VALIDATION,
        "hyperparameterList",
        "too_long",
        template={"hyperparameterList": _hyperparameters(101)},
    ),
    "duplicate hyperparameter names": Bad(
        "POST",
        TPL,
        400,
        VALIDATION,
        "hyperparameterList",
        "value_error",
        template={"hyperparameterList": _hyperparameters(1) * 2},
    ),
    "eleven datasets": Bad(
        "POST",
        TPL,
        400,
        VALIDATION,
        "datasetList",
        "too_long",
        template={"datasetList": _datasets(11)},
    ),
    "dataStorageSize off the 10 GB step": Bad(
        "POST",
        TPL,
        400,
        VALIDATION,
        "dataStorageSize",
        "value_error",
        template={"dataStorageSize": 15},
    ),
    "dataStorageSize over 2040 GB": Bad(
        "POST",
        TPL,
        400,
        VALIDATION,
        "dataStorageSize",
        "less_than_equal",
        template={"dataStorageSize": 2050},
    ),
    "an http model upload uri": Bad(
        "POST",
        TPL,
        400,
        VALIDATION,
        "modelUploadUri",
        "value_error",
        template={"modelUploadUri": "http://example.com/model"},
    ),
    "an s3 uri without a bucket": Bad(
        "POST",
        TPL,
        400,
        VALIDATION,
        "sourceDirUri",
        "value_error",
        template={"sourceDirUri": "s3://"},
    ),
    "a nas uri without an id": Bad(
        "POST",
        TPL,
        400,
        VALIDATION,
        "checkPointUploadUri",
        "value_error",
        template={"checkPointUploadUri": "nas://:/checkpoints"},
    ),
    "a uri climbing out with '..'": Bad(
        "POST",
        TPL,
        400,
        VALIDATION,
        "sourceDirUri",
        "value_error",
        template={"sourceDirUri": "file:///srv/code/../../etc"},
    ),
    "a dataset uri with '..'": Bad(
        "POST",
        TPL,
        400,
        VALIDATION,
        "datasetList.0.dataUri",
        "value_error",
        template={"datasetList": [{"datasetName": "train", "dataUri": "s3://bucket/../x"}]},
    ),
    "an entry point outside the source dir": Bad(
        "POST",
        TPL,
        400,
        VALIDATION,
        "entryPoint",
        "value_error",
        template={"entryPoint": "../x.py"},
    ),
    "an unknown image": Bad(
        "POST", TPL, 400, VALIDATION, "imageId", "not_found", template={"imageId": UNKNOWN_ID}
    ),
    "an unknown flavor": Bad(
        "POST", TPL, 400, VALIDATION, "flavorId", "not_found", template={"flavorId": UNKNOWN_ID}
    ),
    "an unknown algorithm": Bad(
        "POST", TPL, 400, VALIDATION, "algorithmId", "not_found", algorithm={"algorithmId": "nope"}
    ),
    "an algorithm hyperparameter out of range": Bad(
        "POST",
        TPL,
        400,
        VALIDATION,
        "hyperparameterList.0.parameterValue",
        "hyperparameter_spec",
        algorithm={
            "hyperparameterList": [{"parameterName": "n_estimators", "parameterValue": "5000"}]
        },
    ),
    "an algorithm hyperparameter of the wrong type": Bad(
        "POST",
        TPL,
        400,
        VALIDATION,
        "hyperparameterList.0.parameterValue",
        "hyperparameter_spec",
        algorithm={"hyperparameterList": [{"parameterName": "criterion", "parameterValue": "x"}]},
    ),
    "an unknown algorithm hyperparameter": Bad(
        "POST",
        TPL,
        400,
        VALIDATION,
        "hyperparameterList.0.parameterName",
        "unknown",
        algorithm={
            "hyperparameterList": [{"parameterName": "learning_rate", "parameterValue": "1"}]
        },
    ),
    "an algorithm without its train dataset": Bad(
        "POST", TPL, 400, VALIDATION, "datasetList", "missing", algorithm={"datasetList": []}
    ),
    "replace with malformed json": Bad(
        "PUT", ONE_TPL, 400, MALFORMED, "request body", "json_invalid", raw=b'{"a":}'
    ),
    "replace with an empty body": Bad(
        "PUT", ONE_TPL, 400, VALIDATION, "trainingTemplateName", "missing", raw=b""
    ),
    "replace with a word for instanceCount": Bad(
        "PUT",
        ONE_TPL,
        400,
        VALIDATION,
        "instanceCount",
        "int_parsing",
        template={"instanceCount": "many"},
    ),
    "replace with an unknown image": Bad(
        "PUT", ONE_TPL, 400, VALIDATION, "imageId", "not_found", template={"imageId": UNKNOWN_ID}
    ),
    "replace with 2050 GB of storage": Bad(
        "PUT",
        ONE_TPL,
        400,
        VALIDATION,
        "dataStorageSize",
        "less_than_equal",
        template={"dataStorageSize": 2050},
    ),
    "copy with a slashed name": Bad(
        "POST",
        ONE_TPL + "/copy",
        400,
        VALIDATION,
        "trainingTemplateName",
        "string_pattern_mismatch",
        body={"trainingTemplateName": "a/b"},
    ),
}

UNKNOWN_RESOURCE_CASES: dict[str, Bad] = {
    "get an unknown experiment": Bad("GET", f"{EXP}/{UNKNOWN_ID}", 404, NOT_FOUND),
    "update an unknown experiment": Bad(
        "PUT", f"{EXP}/{UNKNOWN_ID}", 404, NOT_FOUND, body={"description": "d"}
    ),
    "delete an unknown experiment": Bad("DELETE", f"{EXP}/{UNKNOWN_ID}", 404, NOT_FOUND),
    "get an unknown template": Bad("GET", f"{TPL}/{UNKNOWN_ID}", 404, NOT_FOUND),
    "replace an unknown template": Bad("PUT", f"{TPL}/{UNKNOWN_ID}", 404, NOT_FOUND, template={}),
    "delete an unknown template": Bad("DELETE", f"{TPL}/{UNKNOWN_ID}", 404, NOT_FOUND),
    "copy an unknown template": Bad("POST", f"{TPL}/{UNKNOWN_ID}/copy", 404, NOT_FOUND, body={}),
    "get an unknown flavor": Bad("GET", f"/flavors/{UNKNOWN_ID}", 404, NOT_FOUND),
    "an unknown route": Bad("GET", "/no-such-resources", 404, NO_ROUTE),
    "an unknown route under a resource": Bad("GET", f"{EXP}/{UNKNOWN_ID}/nope", 404, NO_ROUTE),
    "a wrong method on a collection": Bad("PATCH", EXP, 405, NO_METHOD),
    "delete on a collection": Bad("DELETE", TPL, 405, NO_METHOD),
    "a write to a read-only catalog": Bad("POST", "/flavors", 405, NO_METHOD, body={}),
}

QUERY_CASES: dict[str, Bad] = {
    "page 0": Bad("GET", EXP, 400, VALIDATION, "page", "greater_than_equal", query={"page": "0"}),
    "limit 5000": Bad(
        "GET", EXP, 400, VALIDATION, "limit", "less_than_equal", query={"limit": "5000"}
    ),
    "a word for page": Bad(
        "GET", TPL, 400, VALIDATION, "page", "int_parsing", query={"page": "x"}
    ),
    "limit 0 on images": Bad(
        "GET", "/images", 400, VALIDATION, "limit", "greater_than_equal", query={"limit": "0"}
    ),
}


def _send(api: ApiClient, case: Bad, catalog: TrainingCatalog, existing: Existing) -> Reply:
    path = case.path.format(experiment_id=existing.experiment_id, template_id=existing.template_id)
    body = case.body
    if case.template is not None:
        body = catalog.own_code_body("fresh-template", **case.template)
    if case.algorithm is not None:
        body = catalog.algorithm_body("fresh-template", **case.algorithm)
    if case.raw is not None:
        return api.request(case.method, path, raw=case.raw, query=case.query)
    return api.request(case.method, path, json_body=body, query=case.query)


def _check_rejected_without_change(
    api: ApiClient, db: Database, catalog: TrainingCatalog, existing: Existing, case: Bad
) -> Reply:
    before = snapshot_tables(db)
    reply = _send(api, case, catalog, existing)
    assert_error(reply, case.status, case.code, field=case.field, rule=case.rule)
    assert snapshot_tables(db) == before
    return reply


@pytest.mark.parametrize("case", EXPERIMENT_CASES.values(), ids=EXPERIMENT_CASES.keys())
def test_a_bad_experiment_request_is_rejected_by_field_and_changes_nothing(
    api: ApiClient, db: Database, catalog: TrainingCatalog, existing: Existing, case: Bad
) -> None:
    _check_rejected_without_change(api, db, catalog, existing, case)


@pytest.mark.parametrize("case", TEMPLATE_CASES.values(), ids=TEMPLATE_CASES.keys())
def test_a_bad_training_template_request_is_rejected_by_field_and_changes_nothing(
    api: ApiClient, db: Database, catalog: TrainingCatalog, existing: Existing, case: Bad
) -> None:
    _check_rejected_without_change(api, db, catalog, existing, case)


@pytest.mark.parametrize(
    "case", UNKNOWN_RESOURCE_CASES.values(), ids=UNKNOWN_RESOURCE_CASES.keys()
)
def test_an_unknown_resource_route_or_method_gets_an_error_envelope_and_changes_nothing(
    api: ApiClient, db: Database, catalog: TrainingCatalog, existing: Existing, case: Bad
) -> None:
    reply = _check_rejected_without_change(api, db, catalog, existing, case)
    assert set(reply.body) == {"header"}


@pytest.mark.parametrize("case", QUERY_CASES.values(), ids=QUERY_CASES.keys())
def test_an_out_of_range_query_is_rejected_by_parameter(
    api: ApiClient, db: Database, catalog: TrainingCatalog, existing: Existing, case: Bad
) -> None:
    _check_rejected_without_change(api, db, catalog, existing, case)


def test_a_validation_error_lists_every_bad_field_at_once(api: ApiClient, db: Database) -> None:
    before = snapshot_tables(db)
    reply = api.post(
        "/experiments",
        {"experimentName": "a b", "description": "d" * 300, "tagList": _tags(12)},
    )
    assert_error(reply, 400, VALIDATION)
    fields = {e["field"] for e in reply.header["errors"]}
    assert fields == {"experimentName", "description", "tagList"}
    assert all({"field", "rule", "message"} <= set(e) for e in reply.header["errors"])
    assert snapshot_tables(db) == before


def test_the_limits_themselves_are_accepted(api: ApiClient, catalog: TrainingCatalog) -> None:
    """The edge of each rule is inside it: 50 characters, 10 tags, 100 parameters, 2,040 GB."""
    experiment = api.post("/experiments", {"experimentName": "n" * 50, "tagList": _tags(10)})
    assert experiment.status == 201, experiment.body
    template = api.post(
        "/training-templates",
        catalog.own_code_body(
            "t" * 50,
            tagList=_tags(10),
            hyperparameterList=_hyperparameters(100),
            datasetList=_datasets(10),
            dataStorageSize=2040,
        ),
    )
    assert template.status == 201, template.body
    assert len(template.body["trainingTemplate"]["hyperparameterList"]) == 100


SECRET_BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "in a name": ("/experiments", {"experimentName": f"{SECRET} with spaces"}),
    "in an oversize description": (
        "/experiments",
        {"experimentName": "ok", "description": SECRET * 10},
    ),
    "in a tag value of the wrong type": (
        "/experiments",
        {"experimentName": "ok", "tagList": [{"tagKey": SECRET, "tagValue": {"x": SECRET}}]},
    ),
    "as a list where an object belongs": ("/experiments", {"experimentName": [SECRET]}),
}


@pytest.mark.parametrize("path,body", SECRET_BODIES.values(), ids=SECRET_BODIES.keys())
def test_a_rejected_value_is_never_echoed_back(
    api: ApiClient, db: Database, path: str, body: dict[str, Any]
) -> None:
    before = snapshot_tables(db)
    reply = api.post(path, body)
    assert_error(reply, 400, VALIDATION)
    assert SECRET not in repr(reply.body) and SECRET not in repr(reply.headers)
    assert snapshot_tables(db) == before


def test_a_rejected_template_never_echoes_a_token_in_uris_or_parameters(
    api: ApiClient, db: Database, catalog: TrainingCatalog
) -> None:
    before = snapshot_tables(db)
    reply = api.post(
        "/training-templates",
        catalog.own_code_body(
            "leaky",
            sourceDirUri=f"http://user:{SECRET}@example.com/code",
            modelUploadUri=f"s3://{SECRET}",
            hyperparameterList=[{"parameterName": "token", "parameterValue": SECRET * 100}],
            datasetList=[{"datasetName": "train", "dataUri": f"nas://:/{SECRET}"}],
        ),
    )
    assert_error(reply, 400, VALIDATION, field="sourceDirUri", rule="value_error")
    fields = {e["field"] for e in reply.header["errors"]}
    assert {
        "modelUploadUri",
        "hyperparameterList.0.parameterValue",
        "datasetList.0.dataUri",
    } <= fields
    assert SECRET not in repr(reply.body)
    assert snapshot_tables(db) == before


def test_a_malformed_body_holding_a_token_is_not_echoed(api: ApiClient, db: Database) -> None:
    before = snapshot_tables(db)
    reply = api.post("/experiments", raw=f'{{"experimentName": "{SECRET}", '.encode())
    assert_error(reply, 400, MALFORMED, field="request body", rule="json_invalid")
    assert SECRET not in repr(reply.body)
    assert snapshot_tables(db) == before


def test_the_table_snapshot_does_see_a_successful_create(api: ApiClient, db: Database) -> None:
    """Guards the guard: 'nothing changed' above would be vacuous if snapshots missed rows."""
    before = snapshot_tables(db)
    assert api.post("/experiments", {"experimentName": "seen"}).status == 201
    after = snapshot_tables(db)
    assert len(after["experiments"]) == len(before["experiments"]) + 1
