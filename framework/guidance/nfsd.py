"""Noise-Free Score Distillation (Katzir et al. 2023, arXiv 2310.17590) with Stable Diffusion.

NFSD splits the CFG prediction ``eps_null + s delta_C`` into the condition term ``delta_C = eps_text - eps_null`` and
the unconditional prediction, which holds a domain term ``delta_D`` (towards real images) and the noise. It distils
``w(t) (delta_D + s delta_C)`` with a nominal ``s`` (7.5), the noise removed from the domain term:

* ``t < negative_domain_max_step`` (200): ``delta_D = eps_null - eps_neg``, the negative prompt's prediction (the
  paper's "unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, low-resolution, gloomy")
  subtracted, which removes the noise both predict at small t;
* otherwise ``delta_D = eps_null``.

``eps_null`` is the empty prompt's prediction, ``eps_neg`` the prompt processor's ``negative_prompt``'s (which must be
set). ``guidance_scale`` is NFSD's ``s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

import torch
from torch import Tensor

from framework import registry
from framework.config import NonNegativeInt
from framework.errors import ConfigError
from framework.guidance.base import StableDiffusionGuidanceBase
from framework.guidance.step import DistillationStep

PAPER_NEGATIVE_PROMPT = (
    "unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, low-resolution, gloomy"
)


@registry.register("guidance", "stable-diffusion-nfsd-guidance")
class StableDiffusionNFSDGuidance(StableDiffusionGuidanceBase):
    """NFSD: returns ``loss_nfsd``, ``grad_norm``, ``min_step``, ``max_step``."""

    loss_name = "nfsd"
    needs_null = True
    supports_perp_neg = False

    @dataclass
    class Config(StableDiffusionGuidanceBase.Config):
        guidance_scale: float = 7.5
        """NFSD's scale s of the condition term delta_C = eps_text - eps_null."""
        negative_domain_max_step: NonNegativeInt = 200
        """Timesteps below this take the domain term eps_null - eps_neg (the negative prompt's), others eps_null."""

    cfg: Config

    def update(self, step: DistillationStep, **kwargs: Any) -> Tuple[Tensor, Dict[str, Any]]:
        if step.prompt_utils.negative_prompt == "":
            raise ConfigError(
                "config error: system.prompt_processor.negative_prompt: NFSD's domain term needs a negative prompt; "
                f"the paper's is '{PAPER_NEGATIVE_PROMPT}'"
            )
        small_t = (step.t < self.cfg.negative_domain_max_step).view(-1, *([1] * (step.latents.ndim - 1)))
        delta_d = torch.where(small_t, step.eps_null - step.eps_uncond, step.eps_null)
        delta_c = step.eps_text - step.eps_null
        return delta_d + self.cfg.guidance_scale * delta_c, {}
