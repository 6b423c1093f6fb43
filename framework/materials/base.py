"""Material base class.

Interface (threestudio's): ``material(features=(..., Nf), viewdirs=(..., 3), positions=(..., 3),
light_positions=(..., 3), shading_normal=(..., 3), **kwargs) -> rgb (..., 3)``; arguments a material does not use
are accepted and ignored, so the renderer passes everything it has. ``requires_normal`` tells the renderer whether
to ask the geometry for normals. ``export(features) -> {"albedo": (..., 3) in [0, 1]}`` colours exported meshes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

from torch import Tensor

from framework.module import BaseModule


class BaseMaterial(BaseModule):
    """A registered material: features (and shading inputs) to colour."""

    requires_normal: bool = False
    """Whether ``forward`` needs ``shading_normal``."""

    @dataclass
    class Config:
        pass

    def forward(self, features: Tensor, **kwargs: Any) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def export(self, features: Tensor, **kwargs: Any) -> Dict[str, Any]:
        """Quantities for exported meshes (``albedo``); none by default."""
        return {}
