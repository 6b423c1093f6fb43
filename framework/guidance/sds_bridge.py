"""SDS-Bridge (McAllister et al. 2024, "Rethinking Score Distillation as a Bridge Between Image Distributions",
arXiv 2406.09417) with Stable Diffusion.

SDS transports the renders towards the prompt's distribution from a source distribution that its baseline (the
noise, i.e. the unconditional model) describes badly. SDS-Bridge replaces the baseline by the guided prediction for a
*source* prompt that describes the current renders' failure modes ("oversaturated, smooth, pixelated, cartoon,
foggy, hazy, blurry, bad structure, noisy, malformed"), against a target prompt (``"<prompt>, <tgt_modifier>"``):

* stage 1 (steps before ``stage_two_start_step``): SDS on the target prompt,
  ``stage_one_weight w(t) (eps_uncond + s (eps_tgt - eps_uncond) - eps)`` with ``s = guidance_scale`` (diffusers
  form, as the authors' code);
* stage 2: ``stage_two_weight w(t) (eps_cfg(tgt) - eps_cfg(src))``. Both guided predictions share ``eps_null`` and
  the scale, so the difference is ``s (eps_tgt - eps_src)``: ``stage_two_weight`` is that scale (the authors' 2D
  experiments use 30 with w(t) = 1 - alpha_bar_t), and only the two conditional predictions are computed.

Field names follow the authors' threestudio extension (``stable-diffusion-sds-bridge-guidance``); the source and
target texts are the prompt processor's ``src_modifier``, ``tgt_modifier`` and ``use_modifier_only``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

import torch
from torch import Tensor

from framework import registry
from framework.config import Step
from framework.errors import ConfigError
from framework.guidance.base import StableDiffusionGuidanceBase
from framework.guidance.diffusion import classifier_free_guidance
from framework.guidance.step import DistillationStep


@registry.register("guidance", "stable-diffusion-sds-bridge-guidance")
class StableDiffusionSDSBridgeGuidance(StableDiffusionGuidanceBase):
    """SDS-Bridge: returns ``loss_sds`` (the authors' name), ``grad_norm``, ``min_step``, ``max_step``, ``stage``."""

    loss_name = "sds"
    supports_perp_neg = False

    @dataclass
    class Config(StableDiffusionGuidanceBase.Config):
        guidance_scale: float = 100.0
        """Stage 1 (SDS on the target prompt): diffusers CFG scale s, eps_uncond + s (eps_tgt - eps_uncond)."""
        stage_one_weight: float = 1.0
        """Multiplier of the stage-1 (SDS) update."""
        stage_two_weight: float = 100.0
        """Multiplier of eps_tgt - eps_src in stage 2 (the CFG scale both guided predictions share)."""
        stage_two_start_step: Step = 20000
        """First training step of stage 2 (the bridge); 0: the bridge from the start."""

    cfg: Config

    def bridge_stage(self) -> int:
        """1 (SDS on the target prompt) or 2 (the bridge) at the current step."""
        return 2 if self.global_step >= self.cfg.stage_two_start_step else 1

    def pretrained_predictions(self, step: DistillationStep) -> None:
        pu = step.prompt_utils
        if pu.tgt_text_embeddings_vd is None:
            raise ConfigError(
                "config error: system.prompt_processor.src_modifier: SDS-Bridge needs the source and target texts; "
                "set src_modifier and tgt_modifier"
            )
        b = step.latents.shape[0]
        tgt, src = pu.get_bridge_embeddings(step.elevation, step.azimuth, step.camera_distances,
                                            self.cfg.view_dependent_prompting)
        other = step.text_embeddings[b:] if self.bridge_stage() == 1 else src
        eps = self.predict(step.noisy_latents, step.t, torch.cat([tgt, other]))
        step.eps_text = eps[:b]
        if self.bridge_stage() == 1:
            step.eps_uncond = eps[b:]
            step.eps_cfg = classifier_free_guidance(step.eps_text, step.eps_uncond, self.cfg_scale())
        else:
            step.extra["eps_src"] = eps[b:]
            step.eps_cfg, step.baseline = step.eps_text, eps[b:]

    def update(self, step: DistillationStep, **kwargs: Any) -> Tuple[Tensor, Dict[str, Any]]:
        stage = self.bridge_stage()
        if stage == 1:
            return self.cfg.stage_one_weight * (step.eps_cfg - step.noise), {"stage": stage}
        return self.cfg.stage_two_weight * (step.eps_text - step.extra["eps_src"]), {"stage": stage}
