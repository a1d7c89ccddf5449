"""The iris classifier's architecture: the ``model.py`` a user hands TorchServe."""

from __future__ import annotations

import torch
from torch import nn


class IrisNet(nn.Module):
    """Four measurements in, three class logits out."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)
