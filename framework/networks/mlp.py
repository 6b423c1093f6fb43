"""threestudio's ``VanillaMLP``: bias-free linear layers with ReLU between them, and a named output activation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch.nn as nn
from torch import Tensor

from framework.config import Bounds, PositiveInt
from framework.networks.activations import get_activation


@dataclass
class MLPConfig:
    """threestudio's ``mlp_network_config``."""

    otype: Literal["VanillaMLP", "FullyFusedMLP", "CutlassMLP"] = "VanillaMLP"
    """Network type; tiny-cuda-nn's fused types are read as the same bias-free ReLU network, run in PyTorch."""
    activation: Literal["ReLU"] = "ReLU"
    """Hidden activation."""
    output_activation: str = "none"
    """Activation of the last layer (a name from framework.networks.activations)."""
    n_neurons: Annotated[int, Bounds(ge=1, le=16384)] = 64
    """Width of the hidden layers."""
    n_hidden_layers: PositiveInt = 1
    """Number of hidden layers (at least 1)."""


class VanillaMLP(nn.Module):
    """``dim_in -> n_neurons (-> n_neurons)* -> dim_out`` without biases (tiny-cuda-nn's networks have none).

    >>> import torch
    >>> VanillaMLP(4, 3, MLPConfig(n_neurons=8, n_hidden_layers=2))(torch.zeros(2, 4)).shape
    torch.Size([2, 3])
    """

    def __init__(self, dim_in: int, dim_out: int, cfg: MLPConfig, key: str = "mlp_network_config"):
        super().__init__()
        layers: list = [nn.Linear(dim_in, cfg.n_neurons, bias=False), nn.ReLU(inplace=True)]
        for _ in range(cfg.n_hidden_layers - 1):
            layers += [nn.Linear(cfg.n_neurons, cfg.n_neurons, bias=False), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(cfg.n_neurons, dim_out, bias=False))
        self.layers = nn.Sequential(*layers)
        self.output_activation = get_activation(cfg.output_activation, f"{key}.output_activation")
        self.dim_in, self.dim_out = dim_in, dim_out

    def forward(self, x: Tensor) -> Tensor:
        return self.output_activation(self.layers(x.float()))
