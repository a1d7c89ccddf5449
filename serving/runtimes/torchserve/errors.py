"""One error root for the runtime; each fault says what to fix."""

from __future__ import annotations


class TorchServeRuntimeError(Exception):
    """Root of the runtime's errors; ``message`` is shown to the person who can fix it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ModelDirError(TorchServeRuntimeError):
    """The model directory holds neither a .mar nor weights + model.py + handler.py."""


class TorchServeStartError(TorchServeRuntimeError):
    """TorchServe did not start, or did not load the model."""


class InferenceInputError(TorchServeRuntimeError):
    """A request body that no model could answer (HTTP 400)."""
