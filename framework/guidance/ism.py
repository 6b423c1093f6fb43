"""Interval Score Matching (LucidDreamer, Liang et al. 2024, arXiv 2311.11284) with Stable Diffusion.

ISM replaces SDS's fresh noise by a deterministic DDIM-inversion path and compares predictions at two noise levels
instead of a prediction with the noise:

1. ``s = t - delta_t``; ``x0`` is noised to ``start = max(s - xs_delta_t * xs_inv_steps, 0)`` and DDIM-inverted to
   ``x_s`` in at most ``xs_inv_steps`` steps of ``xs_delta_t``, with the empty prompt's prediction (the null
   condition, LucidDreamer's inverse text);
2. one more inversion step from ``x_s`` to ``x_t`` with ``eps_null(x_s, s)``;
3. ``grad = w(t) (eps_cfg(x_t, t, y) - eps_null(x_s, s))``, CFG with ``guidance_scale`` (diffusers form, 7.5) and
   ``w(t) = sqrt((1 - alpha_bar_t) / alpha_bar_t)`` (``weighting_strategy: ism``, the default here).

The inversion steps are :func:`framework.guidance.inversion.ddim_inversion_step` (why not diffusers'
``DDIMInverseScheduler``: see that module). ``delta_t`` may be a schedule (LucidDreamer anneals it from 100 to 50).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Dict, Tuple

from torch import Tensor

from framework import registry
from framework.config import Bounds, NonNegativeFloat, PositiveInt
from framework.guidance.base import StableDiffusionGuidanceBase
from framework.guidance.diffusion import WeightingStrategy
from framework.guidance.inversion import ddim_inversion_step, noise_of
from framework.guidance.step import DistillationStep
from framework.schedule import Schedule


@registry.register("guidance", "stable-diffusion-ism-guidance")
class StableDiffusionISMGuidance(StableDiffusionGuidanceBase):
    """ISM: returns ``loss_ism``, ``grad_norm``, ``min_step``, ``max_step``."""

    loss_name = "ism"

    @dataclass
    class Config(StableDiffusionGuidanceBase.Config):
        guidance_scale: float = 7.5
        """Diffusers CFG scale of the prediction at x_t (LucidDreamer's guidance_scale)."""
        weighting_strategy: WeightingStrategy = "ism"
        """w(t): ism = sqrt((1 - alpha_bar_t) / alpha_bar_t) (LucidDreamer's), or sds, uniform, fantasia3d."""
        delta_t: Annotated[Schedule, Bounds(ge=1)] = 80
        """The interval t - s in timesteps (number or schedule)."""
        xs_delta_t: Annotated[int, Bounds(ge=1)] = 200
        """Size of the inversion steps from x0 to x_s, in timesteps."""
        xs_inv_steps: PositiveInt = 5
        """Most inversion steps from x0 to x_s."""
        xs_eta: NonNegativeFloat = 0.0
        """Stochastic part of the inversion steps to x_s (0: deterministic DDIM inversion)."""

    cfg: Config

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        super().update_step(epoch, global_step, on_load_weights)
        self.delta_t = int(self.cfg.delta_t(global_step))

    def noisy_latents(self, step: DistillationStep) -> None:
        x0, t = step.latents.detach(), step.t
        null = step.prompt_utils.get_null_embeddings(x0.shape[0], x0.device)
        s = (t - self.delta_t).clamp_min(0)
        cur = (s - self.cfg.xs_delta_t * self.cfg.xs_inv_steps).clamp_min(0)
        x = self.schedule.add_noise(x0, step.noise, cur)
        for _ in range(self.cfg.xs_inv_steps):
            if bool((cur >= s).all()):
                break
            nxt = (cur + self.cfg.xs_delta_t).minimum(s)
            x = ddim_inversion_step(self.schedule, self.predict(x, cur, null), x, cur, nxt, eta=self.cfg.xs_eta)
            cur = nxt
        eps_s = self.predict(x, s, null)
        step.noisy_latents = ddim_inversion_step(self.schedule, eps_s, x, s, t)
        step.noise, _ = noise_of(self.schedule, x0, step.noisy_latents, t)
        step.extra.update(x_s=x, s=s, eps_s=eps_s)

    def update(self, step: DistillationStep, **kwargs: Any) -> Tuple[Tensor, Dict[str, Any]]:
        step.baseline = step.extra["eps_s"]
        return step.eps_cfg - step.extra["eps_s"], {}
