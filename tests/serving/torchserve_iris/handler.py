"""The iris model's custom TorchServe handler, written as a user would write one.

Each item TorchServe hands ``handle`` is one of: a raw request (``{"body": rows}`` on
``/predictions``), one OIP v1 instance (four numbers), or one OIP v2 input tensor
(``{"name", "shape", "datatype", "data"}``). It answers one item per item: class indices.
With a ``labels.json`` (shipped in ``extra/``) it answers class names instead of indices.
Rows whose first value is ``FAULT_VALUE`` make it raise; ``CRASH_VALUE`` kills the worker.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from model import IrisNet
from ts.utils.util import PredictionException

FAULT_VALUE = 666.0
CRASH_VALUE = 999.0
FEATURES = 4


class IrisHandler:
    def __init__(self) -> None:
        self.model: IrisNet | None = None
        self.labels: list[str] | None = None

    def initialize(self, context: Any) -> None:
        model_dir = context.system_properties["model_dir"]
        serialized = context.manifest["model"]["serializedFile"]
        state = torch.load(os.path.join(model_dir, serialized), weights_only=True)
        self.model = IrisNet()
        self.model.load_state_dict(state)
        self.model.eval()
        labels_file = os.path.join(model_dir, "labels.json")
        if os.path.isfile(labels_file):
            with open(labels_file) as labels:
                self.labels = json.load(labels)

    def handle(self, data: list[Any], context: Any) -> list[Any]:
        assert self.model is not None
        answers = []
        for item in data:
            rows = self._rows(item)
            if rows.shape[0] and rows[0, 0] == CRASH_VALUE:
                os._exit(3)
            if rows.shape[0] and rows[0, 0] == FAULT_VALUE:
                raise RuntimeError("the model's own code failed")
            with torch.no_grad():
                classes = self.model(rows).argmax(dim=1).tolist()
            answers.append([self.labels[c] for c in classes] if self.labels else classes)
        if data and not _is_raw(data[0]) and _is_instance(data[0]):
            return [labels[0] for labels in answers]
        return answers

    def _rows(self, item: Any) -> torch.Tensor:
        values = item.get("body", item.get("data")) if isinstance(item, dict) else item
        if isinstance(values, (bytes, bytearray)):
            raise PredictionException("send the rows as JSON (application/json)", 400)
        try:
            rows = torch.tensor(values, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError) as error:
            raise PredictionException(f"rows must be numbers: {error}", 400) from error
        rows = rows.reshape(1, -1) if rows.dim() == 1 else rows
        if rows.dim() != 2 or rows.shape[1] != FEATURES:
            shape = list(rows.shape)
            message = f"each row needs {FEATURES} numbers (iris measurements), got shape {shape}"
            raise PredictionException(message, 400)
        return rows


def _is_raw(item: Any) -> bool:
    return isinstance(item, dict) and "body" in item


def _is_instance(item: Any) -> bool:
    return isinstance(item, list)
