"""/experiments routes."""

from __future__ import annotations

from chalicelib.api.envelope import ListResult, RequestContext, ResourceApi
from chalicelib.domain.experiment import (
    Experiment,
    ExperimentCreate,
    ExperimentQuery,
    ExperimentUpdate,
)
from chalicelib.services.experiments import ExperimentService

api = ResourceApi(__name__, "experiments")


@api.route(
    "/experiments",
    "POST",
    summary="Create an experiment",
    body=ExperimentCreate,
    response_key="experiment",
    response_model=Experiment,
    status=201,
)
def create_experiment(ctx: RequestContext, body: ExperimentCreate) -> Experiment:
    return ExperimentService(ctx.session, ctx.appkey).create(body)


@api.route(
    "/experiments",
    "GET",
    summary="List experiments",
    query=ExperimentQuery,
    response_key="experimentList",
    response_model=Experiment,
    is_list=True,
)
def list_experiments(ctx: RequestContext, query: ExperimentQuery) -> ListResult:
    items, paging = ExperimentService(ctx.session, ctx.appkey).list(query)
    return ListResult(items, paging)


@api.route(
    "/experiments/{experimentId}",
    "GET",
    summary="Get an experiment",
    response_key="experiment",
    response_model=Experiment,
)
def get_experiment(ctx: RequestContext, experiment_id: str) -> Experiment:
    return ExperimentService(ctx.session, ctx.appkey).get(experiment_id)


@api.route(
    "/experiments/{experimentId}",
    "PUT",
    summary="Change an experiment's name, description or tags",
    body=ExperimentUpdate,
    response_key="experiment",
    response_model=Experiment,
)
def update_experiment(
    ctx: RequestContext,
    experiment_id: str,
    body: ExperimentUpdate,
) -> Experiment:
    return ExperimentService(ctx.session, ctx.appkey).update(experiment_id, body)


@api.route("/experiments/{experimentId}", "DELETE", summary="Delete an experiment")
def delete_experiment(ctx: RequestContext, experiment_id: str) -> None:
    ExperimentService(ctx.session, ctx.appkey).delete(experiment_id)
