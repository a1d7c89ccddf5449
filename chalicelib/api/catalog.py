"""/flavors, /images and /algorithms: the catalogs the SDK resolves names through."""

from __future__ import annotations

from chalicelib.api.envelope import ListResult, RequestContext, ResourceApi
from chalicelib.domain.catalog import (
    Algorithm,
    AlgorithmQuery,
    Flavor,
    FlavorQuery,
    Image,
    ImageQuery,
)
from chalicelib.services.catalog import get_catalog, paged

api = ResourceApi(__name__, "catalog")


@api.route(
    "/flavors",
    "GET",
    summary="List instance types (flavors)",
    query=FlavorQuery,
    response_key="flavorList",
    response_model=Flavor,
    is_list=True,
)
def list_flavors(ctx: RequestContext, query: FlavorQuery) -> ListResult:
    return ListResult(*paged(get_catalog().find_flavors(query), query.page, query.limit))


@api.route(
    "/flavors/{flavorId}",
    "GET",
    summary="Get an instance type",
    response_key="flavor",
    response_model=Flavor,
)
def get_flavor(ctx: RequestContext, flavor_id: str) -> Flavor:
    return get_catalog().flavor(flavor_id)


@api.route(
    "/images",
    "GET",
    summary="List images",
    query=ImageQuery,
    response_key="imageList",
    response_model=Image,
    is_list=True,
)
def list_images(ctx: RequestContext, query: ImageQuery) -> ListResult:
    return ListResult(*paged(get_catalog().find_images(query), query.page, query.limit))


@api.route(
    "/images/{imageId}", "GET", summary="Get an image", response_key="image", response_model=Image
)
def get_image(ctx: RequestContext, image_id: str) -> Image:
    return get_catalog().image(image_id)


@api.route(
    "/algorithms",
    "GET",
    summary="List built-in algorithms",
    query=AlgorithmQuery,
    response_key="algorithmList",
    response_model=Algorithm,
    is_list=True,
)
def list_algorithms(ctx: RequestContext, query: AlgorithmQuery) -> ListResult:
    return ListResult(*paged(get_catalog().find_algorithms(query), query.page, query.limit))


@api.route(
    "/algorithms/{algorithmId}",
    "GET",
    summary="Get a built-in algorithm",
    response_key="algorithm",
    response_model=Algorithm,
)
def get_algorithm(ctx: RequestContext, algorithm_id: str) -> Algorithm:
    return get_catalog().algorithm(algorithm_id)
