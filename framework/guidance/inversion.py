"""DDIM inversion: deterministic (or, with ``eta``, partly stochastic) paths from clean latents up to noise levels,
used by ISM (LucidDreamer) and SDI (Score Distillation via Inversion) to reach ``x_t`` instead of adding fresh noise.

One inversion step from ``t_from`` to a noisier ``t_to`` (DDIM, Song et al. 2021, eq. 12 run backwards):
``x0_hat = (x - sigma_from eps) / alpha_from``, ``x_to = alpha_to x0_hat + sigma_to eps``, with ``eps`` the model's
noise prediction at ``(x, t_from)``; ``t_from = -1`` marks clean latents (``alpha = 1``, ``sigma = 0``). With
``eta > 0`` (SDI's ``inversion_eta``) ``eta * sqrt(var) * z`` is added, ``var`` the DDPM posterior variance between
the two levels, ``(1 - a_from) / (1 - a_to) * (1 - a_to / a_from)`` with ``a = alpha_bar``.

Written here rather than with diffusers' ``DDIMInverseScheduler.step``, whose step takes one timestep for the whole
batch and a fixed size ``num_train_timesteps // num_inference_steps``: ISM and SDI need per-sample timesteps (each
sample of a batch has its own ``t``) and step sizes that do not divide the timestep count (ISM's ``delta_t``,
SDI's random final step), and SDI needs the ``eta`` term the inverse scheduler lacks. A test checks this step against
``DDIMInverseScheduler.step`` wherever both apply.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from framework.guidance.diffusion import NoiseSchedule


def alpha_bar_or_clean(schedule: NoiseSchedule, t: Tensor) -> Tensor:
    """``alpha_bar_t`` (B,), with 1 where ``t < 0`` (clean latents)."""
    ab = schedule.alpha_bar(t.clamp_min(0))
    return torch.where(t < 0, torch.ones_like(ab), ab)


def inversion_variance(schedule: NoiseSchedule, t_from: Tensor, t_to: Tensor) -> Tensor:
    """(B,) DDPM posterior variance between ``t_from`` and ``t_to`` (0 where they are equal or ``t_to`` is clean)."""
    a_from, a_to = alpha_bar_or_clean(schedule, t_from), alpha_bar_or_clean(schedule, t_to)
    var = (1 - a_from) / (1 - a_to).clamp_min(1e-12) * (1 - a_to / a_from)
    return torch.where(t_to > t_from, var.clamp_min(0.0), torch.zeros_like(var))


def ddim_inversion_step(
    schedule: NoiseSchedule,
    eps: Tensor,
    x: Tensor,
    t_from: Tensor,
    t_to: Tensor,
    eta: float = 0.0,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Latents at ``t_to`` (B,) from ``x`` at ``t_from`` (B,) and the noise prediction ``eps`` at ``(x, t_from)``.

    Shapes: eps, x (B, C, h, w). Where ``t_to == t_from`` the step returns ``x`` (up to rounding).
    """
    a_from, a_to = alpha_bar_or_clean(schedule, t_from), alpha_bar_or_clean(schedule, t_to)
    shape = (-1,) + (1,) * (x.ndim - 1)
    sqrt_a_from, sqrt_1m_from = a_from.sqrt().view(shape), (1 - a_from).sqrt().view(shape)
    x0_hat = (x - sqrt_1m_from * eps) / sqrt_a_from
    out = a_to.sqrt().view(shape) * x0_hat + (1 - a_to).sqrt().view(shape) * eps
    if eta > 0.0:
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu" if generator else x.device)
        out = out + eta * inversion_variance(schedule, t_from, t_to).sqrt().view(shape) * z.to(x.device)
    return out


def noise_of(schedule: NoiseSchedule, x0: Tensor, x_t: Tensor, t: Tensor) -> Tuple[Tensor, Tensor]:
    """The noise ``eps`` with ``x_t = alpha_t x0 + sigma_t eps`` (B, C, h, w), and ``sigma_t`` shaped for it."""
    alpha, sigma = schedule.alpha_sigma(t, x0.ndim)
    return (x_t - alpha * x0) / sigma, sigma
