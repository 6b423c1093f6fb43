"""``no-material``: the geometry's features are the colour, through an activation (optionally an MLP first)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from torch import Tensor

from framework import registry
from framework.config import PositiveInt
from framework.networks.activations import get_activation
from framework.networks.mlp import MLPConfig, VanillaMLP
from framework.materials.base import BaseMaterial

@registry.register("material", "no-material")
class NoMaterial(BaseMaterial):
    """Unlit colour: ``color_activation(features)`` or ``color_activation(mlp(features))``."""

    @dataclass
    class Config:
        n_output_dims: PositiveInt = 3
        """Colour channels."""
        color_activation: str = "sigmoid"
        """Activation applied to the colour (sigmoid, none, ...)."""
        input_feature_dims: Optional[PositiveInt] = None
        """Feature dimension fed to the MLP (set together with mlp_network_config to use one)."""
        mlp_network_config: Optional[MLPConfig] = None
        """An MLP from features to colour; null: features are the colour."""

    cfg: Config

    def configure(self, **kwargs: Any) -> None:
        cfg = self.cfg
        self.color_act = get_activation(cfg.color_activation, self.key("color_activation"))
        self.use_network = cfg.input_feature_dims is not None and cfg.mlp_network_config is not None
        if (cfg.input_feature_dims is None) != (cfg.mlp_network_config is None):
            raise self.config_error(
                "input_feature_dims", "input_feature_dims and mlp_network_config: set both to use an MLP, or neither"
            )
        if self.use_network:
            self.network = VanillaMLP(
                cfg.input_feature_dims, cfg.n_output_dims, cfg.mlp_network_config, self.key("mlp_network_config")
            )

    def forward(self, features: Tensor, **kwargs: Any) -> Tensor:
        if self.use_network:
            color = self.network(features.reshape(-1, features.shape[-1])).reshape(
                *features.shape[:-1], self.cfg.n_output_dims
            )
        else:
            if features.shape[-1] != self.cfg.n_output_dims:
                raise ValueError(
                    f"no-material without an MLP needs {self.cfg.n_output_dims} feature channels, got "
                    f"{features.shape[-1]}; set geometry.n_feature_dims to {self.cfg.n_output_dims}"
                )
            color = features
        return self.color_act(color)

    def export(self, features: Tensor, **kwargs: Any) -> Dict[str, Any]:
        color = self(features).clamp(0.0, 1.0)
        return {"albedo": color[..., :3]}
