"""Real spherical harmonics of unit directions, tiny-cuda-nn's ``SphericalHarmonics`` encoding.

``degree`` d gives the d^2 functions of bands 0 to d-1 (threestudio's environment map uses degree 3: 9 functions),
orthonormal on the unit sphere. tiny-cuda-nn takes directions mapped to ``[0, 1]^3``; this module takes the unit
directions themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn as nn
from torch import Tensor

from framework.config import Bounds


@dataclass
class SphericalHarmonicsConfig:
    """threestudio's ``dir_encoding_config``."""

    otype: Literal["SphericalHarmonics"] = "SphericalHarmonics"
    """Encoding type."""
    degree: Annotated[int, Bounds(ge=1, le=4)] = 3
    """Number of bands (1 to 4); the encoding has degree^2 outputs."""


def spherical_harmonics(dirs: Tensor, degree: int) -> Tensor:
    """``(N, 3)`` unit directions to ``(N, degree^2)`` real spherical harmonics (tiny-cuda-nn's order and signs)."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.94617469575755997 * zz - 0.31539156525251999,
            -1.0925484305920792 * x * z,
            0.54627421529603959 * (xx - yy),
        ]
    if degree > 3:
        out += [
            0.59004358992664352 * y * (-3.0 * xx + yy),
            2.8906114426405538 * x * y * z,
            0.45704579946446572 * y * (1.0 - 5.0 * zz),
            0.3731763325901154 * z * (5.0 * zz - 3.0),
            0.45704579946446572 * x * (1.0 - 5.0 * zz),
            1.4453057213202769 * z * (xx - yy),
            0.59004358992664352 * x * (-xx + 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


class SphericalHarmonicsEncoding(nn.Module):
    """Module form of ``spherical_harmonics``."""

    def __init__(self, cfg: SphericalHarmonicsConfig):
        super().__init__()
        self.degree = cfg.degree
        self.n_output_dims = cfg.degree**2

    def forward(self, dirs: Tensor) -> Tensor:
        return spherical_harmonics(dirs, self.degree)
