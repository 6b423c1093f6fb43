"""Classifier Score Distillation (Yu et al. 2023, arXiv 2310.19415) with Stable Diffusion.

CSD distils only the classifier term of classifier-free guidance, ``eps_text - eps_null`` (no generative prior, no
noise); its negative-prompt variant subtracts the negative prompt's classifier term,
``w(t) (omega_1 (eps_text - eps_null) - omega_2 (eps_neg - eps_null))``, with ``omega_2`` annealed (e.g. 1 to 0.5).
Config fields are the official implementation's (its ``stable-diffusion-triple-guidance``): the update is
``w(t) (cond_scale eps_text + uncond_scale eps_uncond + null_scale eps_null + noise_scale eps)``, each scale a
schedule, where ``eps_uncond`` is the negative prompt's prediction and ``eps_null`` the empty prompt's. Plain CSD is
cond 1, null -1 (the defaults); the negative variant is cond omega_1, uncond -omega_2, null -(omega_1 - omega_2).
``guidance_scale`` plays no part (CSD has no CFG combination).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

from torch import Tensor

from framework import registry
from framework.guidance.base import StableDiffusionGuidanceBase
from framework.guidance.step import DistillationStep
from framework.schedule import Schedule


@registry.register("guidance", "stable-diffusion-csd-guidance")
class StableDiffusionCSDGuidance(StableDiffusionGuidanceBase):
    """CSD: returns ``loss_sds`` (the official implementation's name), ``grad_norm``, ``min_step``, ``max_step``."""

    loss_name = "sds"
    needs_null = True
    supports_perp_neg = False

    @dataclass
    class Config(StableDiffusionGuidanceBase.Config):
        cond_scale: Schedule = 1.0
        """Weight of the prompt's prediction eps_text (CSD's omega_1)."""
        uncond_scale: Schedule = 0.0
        """Weight of the negative prompt's prediction (-omega_2 in CSD's negative-prompt variant)."""
        null_scale: Schedule = -1.0
        """Weight of the empty prompt's prediction (-(omega_1 - omega_2))."""
        noise_scale: Schedule = 0.0
        """Weight of the sampled noise (-1 with cond 1 + s, uncond -s, null 0 would be SDS)."""

    cfg: Config

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        super().update_step(epoch, global_step, on_load_weights)
        c = self.cfg
        self.scales = [c.cond_scale(global_step), c.uncond_scale(global_step), c.null_scale(global_step),
                       c.noise_scale(global_step)]

    def update(self, step: DistillationStep, **kwargs: Any) -> Tuple[Tensor, Dict[str, Any]]:
        cond, uncond, null, noise = self.scales
        return cond * step.eps_text + uncond * step.eps_uncond + null * step.eps_null + noise * step.noise, {}
