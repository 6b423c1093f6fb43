"""``neural-environment-map-background``: colour as a function of the ray direction (spherical harmonics + MLP)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

import torch
from torch import Tensor

from framework import registry
from framework.backgrounds.base import BaseBackground
from framework.config import PositiveInt, Probability
from framework.networks.activations import get_activation
from framework.networks.mlp import MLPConfig, VanillaMLP
from framework.networks.spherical_harmonics import SphericalHarmonicsConfig, SphericalHarmonicsEncoding


@registry.register("background", "neural-environment-map-background")
class NeuralEnvironmentMapBackground(BaseBackground):
    """A learned environment map: ``color_activation(mlp(SH(dir)))``."""

    @dataclass
    class Config:
        n_output_dims: PositiveInt = 3
        """Colour channels."""
        color_activation: str = "sigmoid"
        """Activation of the MLP output."""
        dir_encoding_config: SphericalHarmonicsConfig = field(default_factory=SphericalHarmonicsConfig)
        """Encoding of the (unit) ray direction."""
        mlp_network_config: MLPConfig = field(default_factory=lambda: MLPConfig(n_neurons=16, n_hidden_layers=2))
        """The MLP from the encoded direction to colour."""
        random_aug: bool = True
        """In training, replace the map by a random colour per image with probability random_aug_prob."""
        random_aug_prob: Probability = 0.5
        """Probability of the random colour."""
        eval_color: Optional[Tuple[float, ...]] = None
        """A fixed colour for validation and test renders (null: the learned map)."""

    cfg: Config

    def configure(self, **kwargs: Any) -> None:
        cfg = self.cfg
        if cfg.eval_color is not None and len(cfg.eval_color) != cfg.n_output_dims:
            raise self.config_error(
                "eval_color", f"needs {cfg.n_output_dims} values (n_output_dims), got {list(cfg.eval_color)}"
            )
        self.color_act = get_activation(cfg.color_activation, self.key("color_activation"))
        self.encoding = SphericalHarmonicsEncoding(cfg.dir_encoding_config)
        self.network = VanillaMLP(
            self.encoding.n_output_dims, cfg.n_output_dims, cfg.mlp_network_config, self.key("mlp_network_config")
        )

    def forward(self, dirs: Tensor) -> Tensor:
        cfg = self.cfg
        if not self.training and cfg.eval_color is not None:
            return torch.tensor(cfg.eval_color, dtype=dirs.dtype, device=dirs.device).expand(
                *dirs.shape[:-1], cfg.n_output_dims
            )
        enc = self.encoding(dirs.reshape(-1, 3))
        color = self.color_act(self.network(enc)).reshape(*dirs.shape[:-1], cfg.n_output_dims)
        return self.random_colour(color, dirs, cfg.random_aug, cfg.random_aug_prob)
