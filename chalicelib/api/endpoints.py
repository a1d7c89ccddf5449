"""/endpoints, /endpoint-stages and /endpoint-models routes, and the internal routes of the
stage deployer and the gateway."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import StringConstraints

from chalicelib.api.envelope import ListResult, RequestContext, ResourceApi
from chalicelib.config import get_settings
from chalicelib.domain.common import WireModel
from chalicelib.domain.endpoint import (
    ApiStatistics,
    ApiStatisticsQuery,
    Endpoint,
    EndpointCreate,
    EndpointModel,
    EndpointModelQuery,
    EndpointQuery,
    EndpointStage,
    GatewayStats,
    StageCreate,
    StageQuery,
)
from chalicelib.services import endpoints, runner_auth
from chalicelib.services.endpoints import EndpointService
from chalicelib.store.db import get_database

api = ResourceApi(__name__, "endpoints")


def _deploy_after_commit(ctx: RequestContext, stage_id: str) -> None:
    ctx.after_commit.append(lambda: endpoints.dispatch(get_database(), stage_id))


@api.route(
    "/endpoints",
    "POST",
    summary="Create an endpoint with its default stage (its pods are deployed on Ray)",
    body=EndpointCreate,
    response_key="endpoint",
    response_model=Endpoint,
    status=201,
)
def create_endpoint(ctx: RequestContext, body: EndpointCreate) -> Endpoint:
    view, stage_id = EndpointService(ctx.session, ctx.appkey).create(body)
    _deploy_after_commit(ctx, stage_id)
    return view


@api.route(
    "/endpoints",
    "GET",
    summary="List endpoints",
    query=EndpointQuery,
    response_key="endpointList",
    response_model=Endpoint,
    is_list=True,
)
def list_endpoints(ctx: RequestContext, query: EndpointQuery) -> ListResult:
    items, paging = EndpointService(ctx.session, ctx.appkey).find(query)
    return ListResult(items, paging)


@api.route(
    "/endpoints/{endpointId}",
    "GET",
    summary="Get an endpoint",
    response_key="endpoint",
    response_model=Endpoint,
)
def get_endpoint(ctx: RequestContext, endpoint_id: str) -> Endpoint:
    return EndpointService(ctx.session, ctx.appkey).get(endpoint_id)


@api.route(
    "/endpoints/{endpointId}",
    "DELETE",
    summary="Delete an endpoint whose default stage is all that is left",
)
def delete_endpoint(ctx: RequestContext, endpoint_id: str) -> None:
    keys = EndpointService(ctx.session, ctx.appkey).delete(endpoint_id)
    ctx.after_commit.append(lambda: endpoints.teardown(keys))


class DefaultStageChange(WireModel):
    endpoint_stage_id: Annotated[str, StringConstraints(min_length=1, max_length=36)]


@api.route(
    "/endpoints/{endpointId}/default-stage",
    "PUT",
    summary="Make an ACTIVE stage the default (the old default stage and its pods go)",
    body=DefaultStageChange,
    response_key="endpoint",
    response_model=Endpoint,
)
def change_default_stage(
    ctx: RequestContext, endpoint_id: str, body: DefaultStageChange
) -> Endpoint:
    view, old = EndpointService(ctx.session, ctx.appkey).change_default(
        endpoint_id, body.endpoint_stage_id
    )
    grace = get_settings().stage_switch_grace_s
    ctx.after_commit.append(lambda: endpoints.teardown([old], grace))
    return view


@api.route(
    "/endpoint-stages",
    "POST",
    summary="Add a stage to an ACTIVE endpoint",
    body=StageCreate,
    response_key="endpointStage",
    response_model=EndpointStage,
    status=201,
)
def create_stage(ctx: RequestContext, body: StageCreate) -> EndpointStage:
    view = EndpointService(ctx.session, ctx.appkey).add_stage(body)
    _deploy_after_commit(ctx, view.endpoint_stage_id)
    return view


@api.route(
    "/endpoint-stages",
    "GET",
    summary="List the stages of an endpoint",
    query=StageQuery,
    response_key="endpointStageList",
    response_model=EndpointStage,
    is_list=True,
)
def list_stages(ctx: RequestContext, query: StageQuery) -> ListResult:
    items, paging = EndpointService(ctx.session, ctx.appkey).stages(query)
    return ListResult(items, paging)


@api.route(
    "/endpoint-stages/{endpointStageId}",
    "GET",
    summary="Get an endpoint stage",
    response_key="endpointStage",
    response_model=EndpointStage,
)
def get_stage(ctx: RequestContext, endpoint_stage_id: str) -> EndpointStage:
    return EndpointService(ctx.session, ctx.appkey).stage(endpoint_stage_id)


@api.route(
    "/endpoint-stages/{endpointStageId}",
    "DELETE",
    summary="Delete a stage that is not the endpoint's default",
)
def delete_stage(ctx: RequestContext, endpoint_stage_id: str) -> None:
    key = EndpointService(ctx.session, ctx.appkey).delete_stage(endpoint_stage_id)
    ctx.after_commit.append(lambda: endpoints.teardown([key]))


@api.route(
    "/endpoint-stages/{endpointStageId}/api-statistics",
    "GET",
    summary="A stage's API calls per minute (2xx/4xx/5xx, latency p50/p90/p99) and their total",
    query=ApiStatisticsQuery,
    response_key="apiStatistics",
    response_model=ApiStatistics,
)
def stage_api_statistics(
    ctx: RequestContext, endpoint_stage_id: str, query: ApiStatisticsQuery
) -> ApiStatistics:
    return endpoints.api_statistics(ctx.session, ctx.appkey, endpoint_stage_id, query)


@api.route(
    "/endpoint-models",
    "GET",
    summary="List the stage resources (models) of a stage",
    query=EndpointModelQuery,
    response_key="endpointModelList",
    response_model=EndpointModel,
    is_list=True,
)
def list_endpoint_models(ctx: RequestContext, query: EndpointModelQuery) -> ListResult:
    items, paging = EndpointService(ctx.session, ctx.appkey).endpoint_models(query)
    return ListResult(items, paging)


@api.route(
    "/endpoint-models/{endpointModelId}",
    "GET",
    summary="Get a stage resource (model)",
    response_key="endpointModel",
    response_model=EndpointModel,
)
def get_endpoint_model(ctx: RequestContext, endpoint_model_id: str) -> EndpointModel:
    return EndpointService(ctx.session, ctx.appkey).endpoint_model(endpoint_model_id)


# -- the deployer's and the gateway's side (signed with runner tokens) ----------------------


class DeployReport(WireModel):
    status: str
    reason: str | None = None
    routes: dict[str, list[str]] | None = None


class StageStatus(WireModel):
    status: str


@api.route(
    "/internal/v1/endpoint-stages/{endpointStageId}/deployment",
    "GET",
    summary="(deployer) what a stage runs",
    response_key="deployment",
    authenticated=False,
    prefixed=False,
)
def deployer_spec(ctx: RequestContext, endpoint_stage_id: str) -> dict[str, Any]:
    runner_auth.verify(
        endpoints.RUNNER_KIND, endpoint_stage_id, ctx.request.headers.get(runner_auth.HEADER)
    )
    return endpoints.deployment(ctx.session, endpoint_stage_id)


@api.route(
    "/internal/v1/endpoint-stages/{endpointStageId}/status",
    "POST",
    summary="(deployer) report a stage's deployment",
    body=DeployReport,
    response_key="endpointStage",
    response_model=StageStatus,
    authenticated=False,
    prefixed=False,
)
def deployer_report(
    ctx: RequestContext, endpoint_stage_id: str, body: DeployReport
) -> StageStatus:
    runner_auth.verify(
        endpoints.RUNNER_KIND, endpoint_stage_id, ctx.request.headers.get(runner_auth.HEADER)
    )
    status = endpoints.report(
        ctx.session, endpoint_stage_id, body.status, body.reason, body.routes
    )
    return StageStatus(status=status)


@api.route(
    "/internal/v1/gateway/routes",
    "GET",
    summary="(gateway) every ACTIVE stage's models and pods",
    response_key="routes",
    authenticated=False,
    prefixed=False,
)
def gateway_routes(ctx: RequestContext) -> dict[str, Any]:
    runner_auth.verify("gateway", "routes", ctx.request.headers.get(runner_auth.HEADER))
    return endpoints.gateway_routes(ctx.session)


@api.route(
    "/internal/v1/gateway/stats",
    "POST",
    summary="(gateway) calls per stage and minute, added to the stored API statistics",
    body=GatewayStats,
    response_key="taken",
    authenticated=False,
    prefixed=False,
)
def gateway_stats(ctx: RequestContext, body: GatewayStats) -> int:
    runner_auth.verify("gateway", "stats", ctx.request.headers.get(runner_auth.HEADER))
    return endpoints.record_stats(ctx.session, body.stats)
