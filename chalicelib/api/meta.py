"""Unauthenticated routes about the service itself: health and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from chalicelib.api.envelope import RequestContext, ResourceApi
from chalicelib.domain.common import WireModel

api = ResourceApi(__name__, "meta")


class Health(WireModel):
    status: str
    database: str


@api.route(
    "/health",
    "GET",
    summary="Liveness and database reachability",
    response_key="health",
    response_model=Health,
    authenticated=False,
    prefixed=False,
)
def health(ctx: RequestContext) -> Health:
    ctx.session.execute(text("SELECT 1"))
    return Health(status="UP", database="UP")


@api.route(
    "/nhn-api-gateway",
    "GET",
    summary="Reachability probe the easymaker SDK sends",
    authenticated=False,
    prefixed=False,
)
def gateway_probe(ctx: RequestContext) -> None:
    return None


@api.route(
    "/openapi.json",
    "GET",
    summary="This OpenAPI document",
    authenticated=False,
    prefixed=False,
    raw=True,
)
def openapi_document(ctx: RequestContext) -> dict[str, Any]:
    from chalicelib.api.openapi import build_openapi

    return build_openapi()
