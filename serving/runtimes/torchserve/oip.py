"""Open Inference Protocol v1/v2 bodies <-> the JSON a TorchServe handler reads and writes.

The handler sees the same kind of body on every route: rows as JSON. OIP v1 ``instances``
arrive as that list; an OIP v2 request with one input arrives as the input's data shaped
by its ``shape`` (nested lists), with several inputs as ``{name: nested data}``. What the
handler answers becomes v1 ``predictions``, or v2 ``outputs`` (one per key when it answers
an object, else one output named ``output-0``). TorchServe's own ``service_envelope``
(kserve or kservev2) applies to every route of the server, so it cannot give v1 and v2
at once; this module does both in the front.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import numpy as np

from serving.runtimes.torchserve.errors import InferenceInputError

INTEGER_TYPES = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
FLOAT_TYPES = {"FP16", "FP32", "FP64"}
DATATYPES = INTEGER_TYPES | FLOAT_TYPES | {"BOOL", "BYTES"}


def v1_instances(body: Any) -> list[Any]:
    """The ``instances`` of an OIP v1 predict request.

    Raises:
        InferenceInputError: the body is not ``{"instances": [...]}`` with at least one item.
    """
    if not isinstance(body, dict) or "instances" not in body:
        raise InferenceInputError('an OIP v1 request is a JSON object with an "instances" list')
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise InferenceInputError('"instances" must be a non-empty list')
    return instances


def v1_response(result: Any) -> dict[str, Any]:
    return {"predictions": result if isinstance(result, list) else [result]}


def v2_handler_body(body: Any) -> tuple[Any, str | None]:
    """What the handler gets for an OIP v2 infer request, and the request's ``id``.

    Raises:
        InferenceInputError: a malformed request, an unknown datatype, data that does not
            match the datatype, or a shape whose element count differs from the data's.
    """
    if not isinstance(body, dict) or "inputs" not in body:
        raise InferenceInputError('an OIP v2 request is a JSON object with an "inputs" list')
    inputs = body["inputs"]
    if not isinstance(inputs, list) or not inputs:
        raise InferenceInputError('"inputs" must be a non-empty list of tensors')
    tensors = {_name(item, index): _tensor(item, index) for index, item in enumerate(inputs)}
    request_id = body.get("id")
    request_id = request_id if isinstance(request_id, str) else None
    if len(tensors) == 1:
        return next(iter(tensors.values())), request_id
    return tensors, request_id


def _name(item: Any, index: int) -> str:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise InferenceInputError(f'inputs[{index}] needs a string "name"')
    return str(item["name"])


def _tensor(item: dict[str, Any], index: int) -> Any:
    name = item["name"]
    datatype, shape, data = item.get("datatype"), item.get("shape"), item.get("data")
    if datatype not in DATATYPES:
        known = ", ".join(sorted(DATATYPES))
        raise InferenceInputError(f"input {name!r}: datatype {datatype!r} is not one of {known}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise InferenceInputError(f"input {name!r}: shape must be a list of non-negative ints")
    if not isinstance(data, list):
        raise InferenceInputError(f"input {name!r}: data must be a list")
    flat = _flatten(data, name)
    if len(flat) != math.prod(shape):
        raise InferenceInputError(
            f"input {name!r}: shape {shape} needs {math.prod(shape)} values, "
            f"data holds {len(flat)}"
        )
    for value in flat:
        _check_value(value, datatype, name)
    return np.array(flat, dtype=object).reshape(shape).tolist()


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _flatten(data: list[Any], name: str) -> list[Any]:
    """Nested lists in row-major order (OIP v2 accepts nested or flat data)."""
    flat: list[Any] = []
    for value in data:
        if isinstance(value, list):
            flat.extend(_flatten(value, name))
        elif isinstance(value, dict):
            raise InferenceInputError(f"input {name!r}: data holds an object")
        else:
            flat.append(value)
    return flat


def _check_value(value: Any, datatype: str, name: str) -> None:
    if datatype == "BOOL":
        valid = isinstance(value, bool)
    elif datatype == "BYTES":
        valid = isinstance(value, str)
    elif datatype in INTEGER_TYPES:
        valid = isinstance(value, int) and not isinstance(value, bool)
        valid = valid and (value >= 0 or not datatype.startswith("U"))
    else:
        valid = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not valid:
        raise InferenceInputError(f"input {name!r}: {value!r} is not a {datatype} value")


def v2_response(
    result: Any, model_name: str, model_version: str, request_id: str | None
) -> dict[str, Any]:
    named = result if isinstance(result, dict) else {"output-0": result}
    return {
        "model_name": model_name,
        "model_version": model_version,
        "id": request_id or str(uuid.uuid4()),
        "outputs": [_output(name, value) for name, value in named.items()],
    }


def _output(name: str, value: Any) -> dict[str, Any]:
    array = np.asarray(value)
    if array.dtype.kind == "b":
        datatype = "BOOL"
    elif array.dtype.kind in "iu":
        datatype = "INT64"
    elif array.dtype.kind == "f":
        datatype = "FP64"
    else:
        datatype = "BYTES"
        array = np.asarray(value, dtype=object)
    return {
        "name": name,
        "shape": list(array.shape),
        "datatype": datatype,
        "data": array.reshape(-1).tolist(),
    }
