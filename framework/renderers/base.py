"""``BaseRenderer``: what every renderer shares: the scene's bounding box and the modules it combines.

A renderer draws a geometry, shaded by a material, over a background (threestudio's interface). The three modules are
held outside the renderer's module tree (the system owns and saves them, once, in its particle) and can be swapped
with ``set_geometry`` / ``set_material`` / ``set_background``. Subclasses implement ``forward(**batch)`` returning
``(B, H, W, C)`` images: ``comp_rgb``, ``opacity``, ... (see each renderer's module docstring).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from framework.config import PositiveFloat
from framework.module import BaseModule


@dataclass
class SubModules:
    """The modules a renderer uses, held outside its module tree (the system owns and saves them)."""

    geometry: Any
    material: Any
    background: Any


class BaseRenderer(BaseModule):
    """A registered renderer: ``configure(geometry=, material=, background=)`` and ``forward(**batch)``."""

    @dataclass
    class Config:
        radius: PositiveFloat = 1.0
        """Half the side of the rendered bounding box (match geometry.radius)."""

    cfg: Config

    samples_normals = False
    """Whether ``request_normals`` makes ``forward`` return per-sample ``normal``, ``t_dirs`` and ``weights`` (what
    the orientation loss integrates along rays): volume renderers only."""

    def configure(self, geometry: Any = None, material: Any = None, background: Any = None, **kwargs: Any) -> None:
        if geometry is None or material is None or background is None:
            raise TypeError(f"{type(self).__name__} needs geometry=, material= and background= modules")
        self.sub_modules = SubModules(geometry, material, background)
        self.normals_requested = False
        r = self.cfg.radius
        self.register_buffer("bbox", torch.tensor([[-r, -r, -r], [r, r, r]], dtype=torch.float32))

    @property
    def geometry(self) -> Any:
        return self.sub_modules.geometry

    @property
    def material(self) -> Any:
        return self.sub_modules.material

    @property
    def background(self) -> Any:
        return self.sub_modules.background

    def request_normals(self) -> None:
        """Ask the geometry for normals on every render, whatever the material needs (a loss uses them)."""
        self.normals_requested = True

    def set_geometry(self, geometry: Any) -> None:
        self.sub_modules.geometry = geometry

    def set_material(self, material: Any) -> None:
        self.sub_modules.material = material

    def set_background(self, background: Any) -> None:
        self.sub_modules.background = background
