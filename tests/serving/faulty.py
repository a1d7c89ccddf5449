"""An estimator that fails on purpose: the runtime's 500 path, with the process left serving.

It lives in its own light module because the runtime unpickles it by reference
(``tests.serving.faulty.FaultyClassifier``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

FAULT_VALUE = 666.0


class FaultyClassifier:
    """Delegates to a fitted classifier, but raises when the first feature is ``FAULT_VALUE``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.n_features_in_ = inner.n_features_in_
        self.classes_ = inner.classes_

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        if np.any(inputs[:, 0] == FAULT_VALUE):
            raise RuntimeError("the model's own code failed")
        return np.asarray(self.inner.predict(inputs))
