"""scikit-learn: a fitted estimator in ``model.joblib`` (or ``model.pkl`` / ``model.pickle``).

Such a file is a pickle, which runs code when loaded: the runtime loads only the artifact of
the model it was started for, the same trust a user gives a model's own code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferResponse
from kserve.utils.numpy_codec import from_np_dtype
from kserve.utils.utils import get_predict_response

from serving.runtimes.python.base import RuntimeModel
from serving.runtimes.python.errors import ModelLoadError
from serving.runtimes.python.tensors import Payload, metadata_tensor, numeric_array

MODEL_FILES = ("model.joblib", "model.pkl", "model.pickle")


class SklearnModel(RuntimeModel):
    """A fitted estimator's ``predict`` behind OIP v1 and v2."""

    def __init__(self, name: str, model_dir: Path) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self._estimator: Any = None

    def load(self) -> bool:
        candidates = (self.model_dir / name for name in MODEL_FILES)
        path = next((candidate for candidate in candidates if candidate.is_file()), None)
        if path is None:
            raise ModelLoadError(
                f"no scikit-learn model in {self.model_dir}: "
                f"expected one of {', '.join(MODEL_FILES)}"
            )
        try:
            self._estimator = joblib.load(path)
        except Exception as error:  # any unpickling fault means "unreadable"
            raise ModelLoadError(f"cannot load {path.name}: {error}") from error
        if not callable(getattr(self._estimator, "predict", None)):
            raise ModelLoadError(f"{path.name} holds no estimator with predict()")
        self.ready = True
        return self.ready

    @property
    def n_features(self) -> int | None:
        count = getattr(self._estimator, "n_features_in_", None)
        return int(count) if count is not None else None

    async def predict(
        self, payload: Payload, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        inputs = numeric_array(payload)
        expected = self.n_features
        if inputs.ndim != 2 or (expected is not None and inputs.shape[1] != expected):
            raise InvalidInput(
                f"expected shape [N, {expected if expected is not None else 'features'}], "
                f"got {list(inputs.shape)}"
            )
        try:
            result = self._estimator.predict(inputs)
        except (ValueError, TypeError) as error:  # scikit-learn's word for bad input
            raise InvalidInput(f"the model refused the input: {error}") from error
        return get_predict_response(payload, result, self.name)

    def get_input_types(self) -> list[dict[str, Any]]:
        return [metadata_tensor("input-0", "FP64", [-1, self.n_features or -1])]

    def get_output_types(self) -> list[dict[str, Any]]:
        classes = getattr(self._estimator, "classes_", None)
        datatype = from_np_dtype(np.asarray(classes).dtype) if classes is not None else "FP64"
        return [metadata_tensor("output-0", datatype or "BYTES", [-1])]
