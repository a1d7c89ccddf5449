"""What every model of this runtime shares on top of ``kserve.Model``."""

from __future__ import annotations

import json
from typing import Any

import kserve
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest


class RuntimeModel(kserve.Model):
    """A KServe model whose OIP v1 body is JSON whatever its ``Content-Type`` says.

    KServe parses a v1 body only when it is labelled ``application/json`` and otherwise hands
    the raw bytes to the model (``curl -d`` sends ``x-www-form-urlencoded``).
    """

    async def preprocess(
        self, payload: dict[str, Any] | bytes | InferRequest, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferRequest:
        if not isinstance(payload, bytes):
            return payload
        try:
            decoded = json.loads(payload)
        except ValueError as error:
            raise InvalidInput(f"expected a JSON body: {error}") from error
        if not isinstance(decoded, dict):
            raise InvalidInput('expected a JSON object with "instances"')
        return decoded
