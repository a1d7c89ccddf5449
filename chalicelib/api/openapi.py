"""The OpenAPI 3.1 document, generated from the route registry and the pydantic models."""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from chalicelib.api.envelope import ROUTES, RouteSpec
from chalicelib.domain.common import Paging

REF = "#/components/schemas/{model}"
ERROR_STATUSES = {
    "400": "Invalid input: the header names each field and the rule it broke",
    "401": "Missing or invalid access token",
    "403": "The token does not grant access to this appkey",
    "404": "Unknown resource (or another tenant's)",
    "409": "Conflicting state (a dependent resource, a duplicate name, a reused key)",
}

HEADER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["isSuccessful", "resultCode", "resultMessage"],
    "properties": {
        "isSuccessful": {"type": "boolean"},
        "resultCode": {"type": "integer"},
        "resultMessage": {"type": "string"},
        "requestId": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "rule": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
    },
}


def _collect_models(
    routes: list[RouteSpec],
) -> list[tuple[type[pydantic.BaseModel], JsonSchemaMode]]:
    wanted: list[tuple[type[pydantic.BaseModel], JsonSchemaMode]] = [(Paging, "serialization")]
    for route in routes:
        if route.body is not None:
            wanted.append((route.body, "validation"))
        if route.response_model is not None:
            wanted.append((route.response_model, "serialization"))
    return list(dict.fromkeys(wanted))


def _query_parameters(model: type[pydantic.BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(by_alias=True, ref_template=REF)
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": False,
            "schema": prop,
        }
        if prop.get("type") == "array":
            parameter.update({"style": "form", "explode": True})
        parameters.append(parameter)
    return parameters


def _success_schema(route: RouteSpec, refs: dict[Any, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = {"header": {"$ref": REF.format(model="Header")}}
    required = ["header"]
    if route.response_key and route.response_model is not None:
        item = refs[(route.response_model, "serialization")]
        properties[route.response_key] = (
            {"type": "array", "items": item} if route.is_list else item
        )
        required.append(route.response_key)
        if route.is_list:
            properties["paging"] = refs[(Paging, "serialization")]
    return {"type": "object", "required": required, "properties": properties}


def _operation(route: RouteSpec, refs: dict[Any, Any]) -> dict[str, Any]:
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "minLength": 1},
        }
        for name in route.path_params
    ]
    if route.query is not None:
        parameters += _query_parameters(route.query)
    if route.method == "POST":
        parameters.append(
            {
                "name": "X-Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                "description": "a retried create with the same key returns the first result",
            }
        )
    responses: dict[str, Any] = {
        str(route.status): {
            "description": "Success",
            "content": {"application/json": {"schema": _success_schema(route, refs)}},
        }
    }
    if route.raw:
        responses = {"200": {"description": "Success", "content": {"application/json": {}}}}
    for status, description in ERROR_STATUSES.items():
        if status in ("401", "403") and not route.authenticated:
            continue
        responses[status] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}},
        }
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": parameters,
        "responses": responses,
    }
    if route.body is not None:
        body_ref = refs[(route.body, "validation")]
        required = bool(route.body.model_json_schema().get("required"))
        operation["requestBody"] = {
            "required": required,
            "content": {"application/json": {"schema": body_ref}},
        }
    if route.authenticated:
        operation["security"] = [{"nhnBearer": []}, {"easymakerToken": []}]
    else:
        operation["security"] = []
    return operation


def build_openapi(server_url: str | None = None) -> dict[str, Any]:
    """The document for every registered route."""
    refs, definitions = models_json_schema(_collect_models(ROUTES), ref_template=REF)
    schemas = dict(definitions.get("$defs", {}))
    schemas["Header"] = HEADER_SCHEMA
    schemas["Error"] = {
        "type": "object",
        "required": ["header"],
        "properties": {"header": {"$ref": REF.format(model="Header")}},
    }
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "OpenMaker API",
            "version": "1.0",
            "description": "AI EasyMaker-compatible machine-learning platform API.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "nhnBearer": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-nhn-authorization",
                    "description": "Bearer <token>",
                },
                "easymakerToken": {"type": "apiKey", "in": "header", "name": "X-EasyMaker-Token"},
            },
        },
    }
    if server_url:
        document["servers"] = [{"url": server_url}]
    return document


Mode = Literal["validation", "serialization"]
