"""Background base class.

Interface (threestudio's): ``background(dirs=(B, H, W, 3)) -> rgb (B, H, W, n_output_dims)`` for unit ray
directions. With ``random_aug``, a training call returns, with probability ``random_aug_prob``, one random colour per
image instead (so that the scene cannot hide in the background); the draw uses torch's global generator.
"""

from __future__ import annotations

from dataclasses import dataclass
import torch
from torch import Tensor

from framework.module import BaseModule


class BaseBackground(BaseModule):
    """A registered background: ray directions to colour."""

    @dataclass
    class Config:
        pass

    def forward(self, dirs: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def random_colour(self, color: Tensor, dirs: Tensor, enabled: bool, prob: float) -> Tensor:
        """``color`` or, in training when ``enabled`` and with probability ``prob``, one random colour per image."""
        if not (self.training and enabled and torch.rand(()).item() < prob):
            return color
        n = color.shape[-1]
        per_image = torch.rand(dirs.shape[0], *([1] * (dirs.dim() - 2)), n, device=dirs.device, dtype=color.dtype)
        # `color * 0` keeps the background's parameters in the graph (DDP)
        return color * 0 + per_image.expand_as(color)
