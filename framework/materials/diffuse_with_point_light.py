"""``diffuse-with-point-light-material``: Lambertian shading under a point light plus ambient light (DreamFusion).

``albedo = albedo_activation(features[..., :3])`` and, with ``l`` the unit vector from the point to the light and
``n`` the shading normal, ``light = ambient + diffuse * max(0, n . l)``. Shading modes:

* ``diffuse``: ``albedo * light`` (Lambertian),
* ``textureless``: ``light`` alone (a white object: only the geometry can explain the image),
* ``albedo``: ``albedo`` alone (unlit).

In training (DreamFusion's augmentation) one mode is drawn per call, for the whole batch: albedo with probability
``1 - diffuse_prob`` (and always during the first ``ambient_only_steps``), otherwise textureless with probability
``textureless_prob`` and diffuse otherwise. Evaluation uses diffuse (albedo during the ambient-only steps). A
``shading=`` or ``ambient_ratio=`` keyword overrides the draw or the light colours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Literal, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from framework import registry
from framework.config import NonNegativeFloat, Probability, Step
from framework.networks.activations import get_activation
from framework.materials.base import BaseMaterial

Shading = Literal["albedo", "textureless", "diffuse"]


@registry.register("material", "diffuse-with-point-light-material")
class DiffuseWithPointLightMaterial(BaseMaterial):
    """Lambertian material with textureless and albedo-only augmentation."""

    requires_normal = True

    @dataclass
    class Config:
        ambient_light_color: Tuple[NonNegativeFloat, NonNegativeFloat, NonNegativeFloat] = (0.1, 0.1, 0.1)
        """Ambient light colour."""
        diffuse_light_color: Tuple[NonNegativeFloat, NonNegativeFloat, NonNegativeFloat] = (0.9, 0.9, 0.9)
        """Point light colour."""
        ambient_only_steps: Step = 1000
        """Training steps at the start that render albedo only (until this step)."""
        diffuse_prob: Probability = 0.75
        """Probability of a shaded (textureless or diffuse) training render after the ambient-only steps."""
        textureless_prob: Probability = 0.5
        """Probability that a shaded training render is textureless."""
        albedo_activation: str = "sigmoid"
        """Activation turning the first three features into the albedo."""
        soft_shading: bool = False
        """In training, draw the diffuse share of the light uniformly in [0, 1] (ambient = 1 - diffuse)."""

    cfg: Config

    def configure(self, **kwargs: Any) -> None:
        self.albedo_act = get_activation(self.cfg.albedo_activation, self.key("albedo_activation"))
        self.register_buffer("ambient_light_color", torch.tensor(self.cfg.ambient_light_color, dtype=torch.float32))
        self.register_buffer("diffuse_light_color", torch.tensor(self.cfg.diffuse_light_color, dtype=torch.float32))
        self.ambient_only = False

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        self.ambient_only = global_step < self.cfg.ambient_only_steps

    def choose_shading(self) -> str:
        """The shading mode of this call (drawn from torch's global generator in training)."""
        if not self.training:
            return "albedo" if self.ambient_only else "diffuse"
        if self.ambient_only or torch.rand(()).item() > self.cfg.diffuse_prob:
            return "albedo"
        return "textureless" if torch.rand(()).item() < self.cfg.textureless_prob else "diffuse"

    def forward(
        self,
        features: Tensor,
        positions: Tensor,
        shading_normal: Tensor,
        light_positions: Tensor,
        ambient_ratio: Optional[float] = None,
        shading: Optional[Shading] = None,
        **kwargs: Any,
    ) -> Tensor:
        albedo = self.albedo_act(features[..., :3])
        if ambient_ratio is not None:
            diffuse_color = torch.full_like(self.diffuse_light_color, 1.0 - ambient_ratio)
            ambient_color = torch.full_like(self.ambient_light_color, ambient_ratio)
        elif self.training and self.cfg.soft_shading:
            diffuse_color = torch.full_like(self.diffuse_light_color, torch.rand(()).item())
            ambient_color = 1.0 - diffuse_color
        else:
            diffuse_color, ambient_color = self.diffuse_light_color, self.ambient_light_color
        light_dirs = F.normalize(light_positions - positions, dim=-1)
        cos = (shading_normal * light_dirs).sum(dim=-1, keepdim=True).clamp(min=0.0)
        textureless = cos * diffuse_color + ambient_color
        shading = shading or self.choose_shading()
        # the `* 0` terms keep every input in the graph, as DDP requires of used parameters
        if shading == "albedo":
            return albedo + textureless * 0
        if shading == "textureless":
            return albedo * 0 + textureless
        if shading == "diffuse":
            return albedo.clamp(0.0, 1.0) * textureless
        raise ValueError(f"unknown shading '{shading}'; expected albedo, textureless or diffuse")

    def export(self, features: Tensor, **kwargs: Any) -> Dict[str, Any]:
        return {"albedo": self.albedo_act(features[..., :3]).clamp(0.0, 1.0)}
