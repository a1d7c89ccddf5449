"""TensorFlow: a SavedModel directory, served by TensorFlow (CPU) inside this runtime.

The ``serving_default`` signature (or ``--signature_name`` / ``SIGNATURE_NAME``) is called
with the request's tensors: OIP v1 ``instances`` feed a signature with one input; OIP v2
inputs are matched to the signature's inputs by name (or by position when there is one). A
single output is returned as ``predictions`` / ``output-0``; several come back as OIP v2
outputs by name, and in OIP v1 as one object per row (TensorFlow Serving's row format).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from kserve.utils.numpy_codec import from_np_dtype

from serving.runtimes.python.base import RuntimeModel
from serving.runtimes.python.errors import ModelLoadError
from serving.runtimes.python.tensors import (
    Payload,
    input_as_numpy,
    metadata_tensor,
    numeric_array,
    v2_input,
)

DEFAULT_SIGNATURE = "serving_default"


class TensorFlowModel(RuntimeModel):
    """One SavedModel signature behind OIP v1 and v2."""

    def __init__(self, name: str, model_dir: Path, signature: str = DEFAULT_SIGNATURE) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.signature_name = signature
        self._function: Any = None
        self._inputs: dict[str, Any] = {}
        self._outputs: dict[str, Any] = {}

    def load(self) -> bool:
        if not (self.model_dir / "saved_model.pb").is_file():
            raise ModelLoadError(f"no TensorFlow SavedModel (saved_model.pb) in {self.model_dir}")
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(str(self.model_dir))
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"cannot load SavedModel: {error}") from error
        if self.signature_name not in loaded.signatures:
            raise ModelLoadError(
                f"SavedModel has no signature {self.signature_name!r}: "
                f"{', '.join(loaded.signatures) or 'none'}"
            )
        self._loaded = loaded  # keeps the signature's variables alive
        self._function = loaded.signatures[self.signature_name]
        self._inputs = dict(self._function.structured_input_signature[1])
        self._outputs = dict(self._function.structured_outputs)
        self.ready = True
        return self.ready

    async def predict(
        self, payload: Payload, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        feeds = self._feeds(payload)
        outputs = await asyncio.to_thread(self._run, feeds)
        if isinstance(payload, InferRequest):
            return self._v2_response(payload, outputs)
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values())).tolist()}
        rows = len(next(iter(outputs.values())))
        return {
            "predictions": [{k: v[i].tolist() for k, v in outputs.items()} for i in range(rows)]
        }

    def _feeds(self, payload: Payload) -> dict[str, np.ndarray]:
        if isinstance(payload, InferRequest) and len(self._inputs) > 1:
            by_name = {tensor.name: tensor for tensor in payload.inputs}
            missing = sorted(set(self._inputs) - set(by_name))
            if missing:
                raise InvalidInput(f"missing inputs {', '.join(missing)}")
            feeds = {name: input_as_numpy(by_name[name]) for name in self._inputs}
        elif len(self._inputs) == 1:
            if isinstance(payload, InferRequest):
                feeds = {next(iter(self._inputs)): input_as_numpy(v2_input(payload))}
            else:
                feeds = {next(iter(self._inputs)): numeric_array(payload)}
        else:
            raise InvalidInput(f"this model takes {len(self._inputs)} named inputs: use OIP v2")
        for name, array in feeds.items():
            self._check(name, array)
        return feeds

    def _check(self, name: str, array: np.ndarray) -> None:
        spec = self._inputs[name]
        if not spec.shape.is_compatible_with(array.shape):
            raise InvalidInput(
                f"input {name!r}: expected shape {spec.shape.as_list()}, got {list(array.shape)}"
            )
        if spec.dtype.is_floating and array.dtype.kind not in "biuf":
            raise InvalidInput(f"input {name!r}: expected numbers, got {array.dtype}")

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        try:
            tensors = {
                name: tf.convert_to_tensor(array, dtype=self._inputs[name].dtype)
                for name, array in feeds.items()
            }
        except (TypeError, ValueError) as error:
            raise InvalidInput(f"input does not fit the signature: {error}") from error
        try:
            result = self._function(**tensors)
        except tf.errors.InvalidArgumentError as error:
            raise InvalidInput(f"the model refused the input: {error.message}") from error
        return {name: tensor.numpy() for name, tensor in result.items()}

    def _v2_response(self, payload: InferRequest, outputs: dict[str, np.ndarray]) -> InferResponse:
        infer_outputs = []
        for name, array in outputs.items():
            output = InferOutput(
                name="output-0" if len(outputs) == 1 else name,
                shape=list(array.shape),
                datatype=from_np_dtype(array.dtype),
            )
            output.set_data_from_numpy(array, binary_data=payload.use_binary_outputs)
            infer_outputs.append(output)
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=infer_outputs,
            use_binary_outputs=payload.use_binary_outputs,
        )

    def get_input_types(self) -> list[dict[str, Any]]:
        return [self._metadata(name, spec) for name, spec in self._inputs.items()]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [self._metadata(name, spec) for name, spec in self._outputs.items()]

    @staticmethod
    def _metadata(name: str, spec: Any) -> dict[str, Any]:
        shape = [-1 if dim is None else dim for dim in spec.shape.as_list()]
        datatype = from_np_dtype(np.dtype(spec.dtype.as_numpy_dtype)) or "BYTES"
        return metadata_tensor(name, datatype, shape)
