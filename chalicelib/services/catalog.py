"""Catalog lookups: flavors, built-in images and algorithms from configuration files.

Defaults ship in ``chalicelib/catalog/*.json``; ``OPENMAKER_FLAVORS_FILE`` (and the images and
algorithms equivalents) replace them, e.g. to describe the flavors of a real Ray cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, TypeAdapter

from chalicelib.config import get_settings
from chalicelib.domain.catalog import (
    Algorithm,
    AlgorithmQuery,
    Flavor,
    FlavorQuery,
    GroupType,
    Image,
    ImageQuery,
)
from chalicelib.domain.common import Paging
from chalicelib.errors import NotFoundError

DEFAULTS = Path(__file__).resolve().parent.parent / "catalog"
ModelT = TypeVar("ModelT", bound=BaseModel)

# An image's type says which resources may use it.
IMAGE_GROUPS: dict[GroupType, frozenset[GroupType]] = {
    GroupType.NOTEBOOK: frozenset({GroupType.NOTEBOOK}),
    GroupType.TRAINING: frozenset(
        {GroupType.TRAINING, GroupType.HYPERPARAMETER_TUNING, GroupType.PIPELINE_RUN}
    ),
}


def _load(path: Path, model: type[ModelT]) -> list[ModelT]:
    return TypeAdapter(list[model]).validate_python(json.loads(path.read_text()))  # type: ignore[valid-type]


@dataclass(frozen=True)
class Catalog:
    flavors: tuple[Flavor, ...]
    images: tuple[Image, ...]
    algorithms: tuple[Algorithm, ...]

    def flavor(self, flavor_id: str) -> Flavor:
        for flavor in self.flavors:
            if flavor.id == flavor_id:
                return flavor
        raise NotFoundError(f"flavor {flavor_id} not found; GET /flavors lists them")

    def image(self, image_id: str) -> Image:
        for image in self.images:
            if image.image_id == image_id:
                return image
        raise NotFoundError(f"image {image_id} not found; GET /images lists them")

    def algorithm(self, algorithm_id: str) -> Algorithm:
        for algorithm in self.algorithms:
            if algorithm.algorithm_id == algorithm_id:
                return algorithm
        raise NotFoundError(f"algorithm {algorithm_id} not found; GET /algorithms lists them")

    def find_flavors(self, query: FlavorQuery) -> list[Flavor]:
        found = list(self.flavors)
        if query.group_type is not None:
            found = [f for f in found if query.group_type in f.group_type_list]
        if query.core_type_code is not None:
            found = [f for f in found if f.core_type_code == query.core_type_code]
        if query.algorithm_id:
            algorithm = self.algorithm(query.algorithm_id)
            cores = {
                self.image(image_id).core_type_code
                for image_id in (algorithm.cpu_training_image_id, algorithm.gpu_training_image_id)
                if image_id
            }
            found = [f for f in found if f.core_type_code in cores]
        return found

    def find_images(self, query: ImageQuery) -> list[Image]:
        found = list(self.images)
        if query.group_type_code_list:
            wanted = set(query.group_type_code_list)
            found = [i for i in found if wanted & IMAGE_GROUPS.get(i.image_type_code, frozenset())]
        if query.core_type_code is not None:
            found = [i for i in found if i.core_type_code == query.core_type_code]
        return found

    def find_algorithms(self, query: AlgorithmQuery) -> list[Algorithm]:
        if query.algorithm_name:
            return [a for a in self.algorithms if a.algorithm_name == query.algorithm_name]
        return list(self.algorithms)


@lru_cache(maxsize=1)
def get_catalog() -> Catalog:
    settings = get_settings()
    return Catalog(
        flavors=tuple(_load(settings.flavors_file or DEFAULTS / "flavors.json", Flavor)),
        images=tuple(_load(settings.images_file or DEFAULTS / "images.json", Image)),
        algorithms=tuple(
            _load(settings.algorithms_file or DEFAULTS / "algorithms.json", Algorithm)
        ),
    )


def paged(items: list[ModelT], page: int, limit: int) -> tuple[list[ModelT], Paging]:
    start = (page - 1) * limit
    return items[start : start + limit], Paging(page=page, limit=limit, total_count=len(items))
