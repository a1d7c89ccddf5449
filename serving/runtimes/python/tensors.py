"""A request's payload as arrays or texts, with a clear 400 for anything malformed.

KServe hands a model a ``dict`` for OIP v1 (``{"instances": [...]}``) and an ``InferRequest``
for OIP v2. Its own conversion raises bare ``ValueError`` on a shape that does not match the
data or a value that does not fit the datatype, which the ModelServer renders as a 500; these
helpers turn every such fault into ``InvalidInput`` (a 400 naming the problem).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest
from kserve.utils.numpy_codec import to_np_dtype

Payload: TypeAlias = dict[str, Any] | InferRequest


def v1_instances(payload: dict[str, Any]) -> list[Any]:
    """The non-empty ``instances`` (or ``inputs``) list of an OIP v1 body."""
    if not isinstance(payload, dict):
        raise InvalidInput('expected a JSON object with "instances"')
    instances = payload.get("instances", payload.get("inputs"))
    if instances is None:
        raise InvalidInput('expected a JSON object with "instances"')
    if not isinstance(instances, list):
        raise InvalidInput('"instances" must be a list')
    if not instances:
        raise InvalidInput('"instances" is empty')
    return instances


def v2_input(payload: InferRequest, index: int = 0) -> InferInput:
    if not payload.inputs:
        raise InvalidInput('"inputs" is empty')
    if index >= len(payload.inputs):
        raise InvalidInput(f"expected at least {index + 1} inputs")
    return payload.inputs[index]


def input_as_numpy(tensor: InferInput) -> np.ndarray:
    """One OIP v2 input as an array of its declared datatype and shape."""
    if to_np_dtype(tensor.datatype) is None:
        raise InvalidInput(f"input {tensor.name!r}: unknown datatype {tensor.datatype!r}")
    try:
        array = tensor.as_numpy()
    except InvalidInput:
        raise
    except (ValueError, TypeError, OverflowError) as error:
        raise InvalidInput(
            f"input {tensor.name!r}: data does not fit datatype {tensor.datatype} "
            f"and shape {list(tensor.shape)}: {error}"
        ) from error
    if array.size == 0:
        raise InvalidInput(f"input {tensor.name!r} is empty")
    return array


def numeric_array(payload: Payload) -> np.ndarray:
    """The first (v2) or only (v1) input as a numeric array with one row per instance."""
    if isinstance(payload, InferRequest):
        array = input_as_numpy(v2_input(payload))
    else:
        instances = v1_instances(payload)
        try:
            array = np.asarray(instances)
        except ValueError as error:  # ragged rows
            raise InvalidInput(f'"instances" rows differ in length: {error}') from error
    if array.dtype.kind not in "biuf":
        raise InvalidInput(f"expected numbers, got values of type {array.dtype}")
    return array


def texts(payload: Payload) -> list[str]:
    """The instances of a text model: v1 strings, or a v2 ``BYTES`` input of strings."""
    if isinstance(payload, InferRequest):
        tensor = v2_input(payload)
        if tensor.datatype != "BYTES":
            raise InvalidInput(f"input {tensor.name!r} must be BYTES (text): {tensor.datatype}")
        values: list[Any] = [
            value.decode() if isinstance(value, bytes) else value
            for value in input_as_numpy(tensor).reshape(-1).tolist()
        ]
    else:
        values = v1_instances(payload)
    if not all(isinstance(value, str) for value in values):
        raise InvalidInput("expected a list of strings")
    return values


def metadata_tensor(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    """An entry of OIP v2 model metadata's ``inputs`` or ``outputs``."""
    return {"name": name, "datatype": datatype, "shape": shape}
