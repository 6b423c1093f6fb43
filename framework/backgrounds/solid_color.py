"""``solid-color-background``: one colour, fixed or learned, with optional random-colour augmentation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from framework import registry
from framework.backgrounds.base import BaseBackground
from framework.config import PositiveInt, Probability


@registry.register("background", "solid-color-background")
class SolidColorBackground(BaseBackground):
    """A constant colour behind the scene."""

    @dataclass
    class Config:
        n_output_dims: PositiveInt = 3
        """Colour channels."""
        color: Tuple[float, ...] = (1.0, 1.0, 1.0)
        """The colour (one value per channel)."""
        learned: bool = False
        """Optimise the colour."""
        random_aug: bool = False
        """In training, replace the colour by a random one per image with probability random_aug_prob."""
        random_aug_prob: Probability = 0.5
        """Probability of the random colour."""

    cfg: Config

    def configure(self, **kwargs: Any) -> None:
        if len(self.cfg.color) != self.cfg.n_output_dims:
            raise self.config_error(
                "color", f"needs {self.cfg.n_output_dims} values (n_output_dims), got {list(self.cfg.color)}"
            )
        color = torch.tensor(self.cfg.color, dtype=torch.float32)
        if self.cfg.learned:
            self.env_color = nn.Parameter(color)
        else:
            self.register_buffer("env_color", color)

    def forward(self, dirs: Tensor) -> Tensor:
        color = torch.ones_like(dirs[..., :1]) * self.env_color.to(dirs)
        return self.random_colour(color, dirs, self.cfg.random_aug, self.cfg.random_aug_prob)
