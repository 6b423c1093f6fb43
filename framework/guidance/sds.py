"""Score Distillation Sampling (DreamFusion, arXiv 2209.14988) with Stable Diffusion.

``grad_x0 = w(t) (eps_cfg(x_t, y, t) - eps)``: the baseline is the sampled noise. Config names and meanings follow
threestudio's ``stable-diffusion-guidance``, ``guidance_scale`` included: threestudio's SDS guides with
``eps_text + s (eps_text - eps_uncond)``, which is the diffusers-convention scale ``s + 1``; the conversion is made
once, in :meth:`StableDiffusionGuidance.cfg_scale` (see ``framework.guidance.diffusion``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

from torch import Tensor

from framework import registry
from framework.guidance.base import StableDiffusionGuidanceBase
from framework.guidance.step import DistillationStep


@registry.register("guidance", "stable-diffusion-guidance")
class StableDiffusionGuidance(StableDiffusionGuidanceBase):
    """SDS: returns ``loss_sds``, ``grad_norm``, ``min_step``, ``max_step``."""

    loss_name = "sds"

    @dataclass
    class Config(StableDiffusionGuidanceBase.Config):
        guidance_scale: float = 100.0
        """threestudio's SDS scale s: eps_text + s (eps_text - eps_uncond), i.e. diffusers' CFG scale s + 1."""

    cfg: Config

    def cfg_scale(self) -> float:
        return self.cfg.guidance_scale + 1.0

    def update(self, step: DistillationStep, **kwargs: Any) -> Tuple[Tensor, Dict[str, Any]]:
        return step.eps_cfg - step.noise, {}
