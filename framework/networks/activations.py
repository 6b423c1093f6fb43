"""Named activations used by configs (``density_activation: softplus``, ``color_activation: sigmoid``).

The names are threestudio's. ``trunc_exp`` is ``exp`` whose gradient is computed with the input clamped at 15, which
keeps an exponential density activation from producing infinite gradients.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.errors import ConfigError


class _TruncExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Tensor) -> Tensor:
    """``exp(x)`` with the backward pass using ``exp(min(x, 15))``."""
    return _TruncExp.apply(x)


ACTIVATIONS: Dict[str, Callable[[Tensor], Tensor]] = {
    "none": lambda x: x,
    "identity": lambda x: x,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": F.relu,
    "softplus": F.softplus,
    "shifted_softplus": lambda x: F.softplus(x - 1.0),
    "exp": torch.exp,
    "shifted_exp": lambda x: torch.exp(x - 1.0),
    "trunc_exp": trunc_exp,
    "shifted_trunc_exp": lambda x: trunc_exp(x - 1.0),
    "scale_-11_01": lambda x: x * 0.5 + 0.5,
}


def get_activation(name: str | None, key: str = "activation") -> Callable[[Tensor], Tensor]:
    """The activation called ``name`` (None means identity); an unknown name raises ConfigError naming ``key``."""
    if name is None:
        return ACTIVATIONS["none"]
    fn = ACTIVATIONS.get(name.lower())
    if fn is None:
        raise ConfigError(f"config error: {key}: unknown activation '{name}'; valid: {', '.join(sorted(ACTIVATIONS))}")
    return fn
