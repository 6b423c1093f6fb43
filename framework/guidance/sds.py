"""Score Distillation Sampling (DreamFusion, arXiv 2209.14988) with Stable Diffusion.

``grad_x0 = w(t) (eps_cfg(x_t, y, t) - eps)``: the baseline is the sampled noise. Config names follow threestudio's
``stable-diffusion-guidance``, except that ``guidance_scale`` uses the diffusers CFG convention: threestudio's
``guidance_scale: 100`` is ``guidance_scale: 101`` here (see ``framework.guidance.diffusion``).
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

from torch import Tensor

from framework import registry
from framework.guidance.base import DistillationStep, StableDiffusionGuidanceBase


@registry.register("guidance", "stable-diffusion-guidance")
class StableDiffusionGuidance(StableDiffusionGuidanceBase):
    """SDS: returns ``loss_sds``, ``grad_norm``, ``min_step``, ``max_step``."""

    loss_name = "sds"

    def baseline(self, step: DistillationStep, **kwargs: Any) -> Tuple[Tensor, Dict[str, Any]]:
        return step.noise, {}
