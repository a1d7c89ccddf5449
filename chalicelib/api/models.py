"""/models routes."""

from __future__ import annotations

from chalicelib.api.envelope import ListResult, RequestContext, ResourceApi
from chalicelib.domain.model import Model, ModelCreate, ModelQuery, ModelUpdate
from chalicelib.services.models import ModelService

api = ResourceApi(__name__, "models")


@api.route(
    "/models",
    "POST",
    summary="Create a model from an artifact URI, a COMPLETE training or a COMPLETE tuning",
    body=ModelCreate,
    response_key="model",
    response_model=Model,
    status=201,
)
def create_model(ctx: RequestContext, body: ModelCreate) -> Model:
    return ModelService(ctx.session, ctx.appkey).create(body)


@api.route(
    "/models",
    "GET",
    summary="List models",
    query=ModelQuery,
    response_key="modelList",
    response_model=Model,
    is_list=True,
)
def list_models(ctx: RequestContext, query: ModelQuery) -> ListResult:
    items, paging = ModelService(ctx.session, ctx.appkey).list(query)
    return ListResult(items, paging)


@api.route(
    "/models/{modelId}",
    "GET",
    summary="Get a model",
    response_key="model",
    response_model=Model,
)
def get_model(ctx: RequestContext, model_id: str) -> Model:
    return ModelService(ctx.session, ctx.appkey).get(model_id)


@api.route(
    "/models/{modelId}",
    "PUT",
    summary="Change a model's name, description or tags",
    body=ModelUpdate,
    response_key="model",
    response_model=Model,
)
def update_model(ctx: RequestContext, model_id: str, body: ModelUpdate) -> Model:
    return ModelService(ctx.session, ctx.appkey).update(model_id, body)


@api.route("/models/{modelId}", "DELETE", summary="Delete a model")
def delete_model(ctx: RequestContext, model_id: str) -> None:
    ModelService(ctx.session, ctx.appkey).delete(model_id)
