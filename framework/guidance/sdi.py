"""Score Distillation via Inversion (SDI, Lukoianov et al. 2024, arXiv 2405.15891) with Stable Diffusion.

SDS adds fresh noise to the render; SDI takes the noise that DDIM inversion of the render implies. Following
threestudio's ``stable-diffusion-sdi-guidance`` (its field names and meanings):

1. the render's latents ``x0`` are DDIM-inverted along the scheduler's ``inversion_n_steps``-step grid (diffusers'
   ``DDIMInverseScheduler.set_timesteps``, the model's ``timestep_spacing``) up to ``t' = t + delta``, ``delta`` drawn
   in ``[0, num_train_timesteps / inversion_n_steps)``, each step guided with ``inversion_guidance_scale``
   (threestudio's SDS form, like ``guidance_scale``: -7.5 is diffusers' -6.5) and ``inversion_eta`` of stochastic
   DDIM noise;
2. the noise this implies, ``eps_inv = (x_t' - alpha_t' x0) / sigma_t'``, gives ``x_t = alpha_t x0 + sigma_t eps_inv``
   (threestudio's "remap the noise from t + delta to t");
3. the update is SDS's with that noise: ``x0 - x0_hat(eps_cfg) = (sigma_t / alpha_t) (eps_cfg - eps_inv)``, scaled
   as threestudio's loss ``0.5 * mean((x0 - x0_hat)^2) / B``, i.e. ``w = (sigma_t / alpha_t) / (B C h w)`` in this
   project's reparameterised loss (``weighting_strategy`` is not used, as in threestudio's SDI).

Deviations from threestudio's code, for the paper's formula: the inversion's first step starts from the clean
latents (alpha = 1) with the model evaluated at t = 0 (threestudio evaluates it at a negative timestep), and ``x_t``
is remapped to ``t`` as its comment says (its code keeps the latents of ``t'`` and evaluates them at ``t``).
``enable_sdi: false`` is SDS with this scaling. ``t_anneal`` makes ``t`` go linearly from the upper to the lower end
over ``trainer_max_steps``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

import torch
from torch import Tensor

from framework import registry
from framework.config import NonNegativeFloat, PositiveInt, Steps
from framework.guidance.inversion import ddim_inversion_step, noise_of
from framework.guidance.sds import StableDiffusionGuidance
from framework.guidance.step import DistillationStep


@registry.register("guidance", "stable-diffusion-sdi-guidance")
class StableDiffusionSDIGuidance(StableDiffusionGuidance):
    """SDI: returns ``loss_sdi``, ``grad_norm``, ``min_step``, ``max_step``."""

    loss_name = "sdi"

    @dataclass
    class Config(StableDiffusionGuidance.Config):
        trainer_max_steps: Steps = 10000
        """Training length that t_anneal (and sqrt_anneal) spread their schedule over."""
        enable_sdi: bool = True
        """Take the noise from DDIM inversion; false: fresh noise as SDS."""
        inversion_guidance_scale: float = -7.5
        """CFG scale of the inversion steps, threestudio's SDS form (s' is diffusers' s' + 1)."""
        inversion_n_steps: PositiveInt = 10
        """Steps of the inversion grid over all timesteps."""
        inversion_eta: NonNegativeFloat = 0.3
        """Stochastic DDIM noise added in each inversion step (0: deterministic)."""
        t_anneal: bool = True
        """t goes linearly from max_step_percent to min_step_percent over trainer_max_steps (one t per step)."""

    cfg: Config

    def configure(self) -> None:
        super().configure()
        import inspect

        from diffusers import DDIMInverseScheduler

        accepted = inspect.signature(DDIMInverseScheduler.__init__).parameters  # the model's may be a PNDM config
        inverse = DDIMInverseScheduler.from_config(
            {k: v for k, v in self.models.scheduler.config.items() if k in accepted}
        )
        inverse.set_timesteps(self.cfg.inversion_n_steps)
        self.inversion_grid = inverse.timesteps.long()

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        super().update_step(epoch, global_step, on_load_weights)
        if self.cfg.t_anneal:
            progress = min(max(global_step, 0) / self.cfg.trainer_max_steps, 1.0)
            n = self.schedule.num_train_timesteps
            lo = self.cfg.min_step_percent(global_step)
            hi = self.cfg.max_step_percent.points[0][1]
            self.min_step = self.max_step = min(int(n * ((hi - lo) * (1.0 - progress) + lo)), n - 1)

    def inversion_paths(self, t: Tensor) -> Tensor:
        """(K, B) timesteps of each sample's inversion path: -1 (clean), the grid points below its t, then
        ``t + delta`` (repeated to pad shorter paths: a step to the same level is the identity)."""
        n = self.schedule.num_train_timesteps
        delta = (torch.rand(t.shape, device=t.device) * (n // self.cfg.inversion_n_steps)).long()
        last = (t + delta).clamp_max(n - 1)
        grid = self.inversion_grid.to(t.device)
        rows = [torch.full_like(t, -1)]
        for g in grid:
            rows.append(torch.where(g < t, g.expand_as(t), last))
        rows.append(last)
        return torch.stack(rows)

    def noisy_latents(self, step: DistillationStep) -> None:
        if not self.cfg.enable_sdi:
            return super().noisy_latents(step)
        x0 = step.latents.detach()
        paths = self.inversion_paths(step.t)
        x = x0
        for cur, nxt in zip(paths[:-1], paths[1:]):
            if bool((cur == nxt).all()):
                continue
            eps = self.guided_prediction(step, x, cur.clamp_min(0), self.cfg.inversion_guidance_scale + 1.0,
                                         self.cfg.inversion_guidance_scale)["eps_cfg"]
            x = ddim_inversion_step(self.schedule, eps, x, cur, nxt, eta=self.cfg.inversion_eta)
        step.noise, _ = noise_of(self.schedule, x0, x, paths[-1])
        step.noisy_latents = self.schedule.add_noise(x0, step.noise, step.t)

    def update(self, step: DistillationStep, **kwargs: Any) -> Tuple[Tensor, Dict[str, Any]]:
        return step.eps_cfg - step.noise, {}

    def weight(self, step: DistillationStep) -> Tensor:
        alpha, sigma = self.schedule.alpha_sigma(step.t, step.latents.ndim)
        return sigma / alpha / step.latents.numel()
