"""/training-templates routes."""

from __future__ import annotations

from chalicelib.api.envelope import ListResult, RequestContext, ResourceApi
from chalicelib.domain.training import (
    TrainingTemplate,
    TrainingTemplateCopy,
    TrainingTemplateCreate,
    TrainingTemplateQuery,
)
from chalicelib.services.training_templates import TrainingTemplateService

api = ResourceApi(__name__, "training-templates")
ONE = "/training-templates/{trainingTemplateId}"


@api.route(
    "/training-templates",
    "POST",
    summary="Create a training template",
    body=TrainingTemplateCreate,
    response_key="trainingTemplate",
    response_model=TrainingTemplate,
    status=201,
)
def create_training_template(
    ctx: RequestContext, body: TrainingTemplateCreate
) -> TrainingTemplate:
    return TrainingTemplateService(ctx.session, ctx.appkey).create(body)


@api.route(
    "/training-templates",
    "GET",
    summary="List training templates",
    query=TrainingTemplateQuery,
    response_key="trainingTemplateList",
    response_model=TrainingTemplate,
    is_list=True,
)
def list_training_templates(ctx: RequestContext, query: TrainingTemplateQuery) -> ListResult:
    items, paging = TrainingTemplateService(ctx.session, ctx.appkey).list(query)
    return ListResult(items, paging)


@api.route(
    ONE,
    "GET",
    summary="Get a training template",
    response_key="trainingTemplate",
    response_model=TrainingTemplate,
)
def get_training_template(
    ctx: RequestContext,
    training_template_id: str,
) -> TrainingTemplate:
    return TrainingTemplateService(ctx.session, ctx.appkey).get(training_template_id)


@api.route(
    ONE,
    "PUT",
    summary="Replace a training template",
    body=TrainingTemplateCreate,
    response_key="trainingTemplate",
    response_model=TrainingTemplate,
)
def update_training_template(
    ctx: RequestContext,
    training_template_id: str,
    body: TrainingTemplateCreate,
) -> TrainingTemplate:
    return TrainingTemplateService(ctx.session, ctx.appkey).update(training_template_id, body)


@api.route(
    ONE + "/copy",
    "POST",
    summary="Copy a training template",
    body=TrainingTemplateCopy,
    response_key="trainingTemplate",
    response_model=TrainingTemplate,
    status=201,
)
def copy_training_template(
    ctx: RequestContext,
    training_template_id: str,
    body: TrainingTemplateCopy,
) -> TrainingTemplate:
    service = TrainingTemplateService(ctx.session, ctx.appkey)
    return service.copy(training_template_id, body.training_template_name)


@api.route(ONE, "DELETE", summary="Delete a training template")
def delete_training_template(ctx: RequestContext, training_template_id: str) -> None:
    TrainingTemplateService(ctx.session, ctx.appkey).delete(training_template_id)
