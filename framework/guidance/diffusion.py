"""The forward process of a DDPM-trained model and the conventions score distillation builds on.

Notation (DDPM, Ho et al. 2020; v-prediction, Salimans & Ho 2022):
``x_t = alpha_t * x0 + sigma_t * eps`` with ``alpha_t = sqrt(alpha_bar_t)``, ``sigma_t = sqrt(1 - alpha_bar_t)`` and
``alpha_bar`` the scheduler's ``alphas_cumprod``. A model predicts ``eps`` (``prediction_type: epsilon``) or
``v = alpha_t * eps - sigma_t * x0`` (``v_prediction``); from ``v``, ``eps = alpha_t * v + sigma_t * x_t``.

Classifier-free guidance, one convention for the whole project (diffusers, Imagen):
``eps_cfg = eps_uncond + s * (eps_text - eps_uncond)``. ``s = 1`` is the text-conditioned prediction alone, ``s = 0``
the unconditional one. threestudio's SDS guidance writes ``eps_text + s' * (eps_text - eps_uncond)``, which is
``s = s' + 1`` in this form; ``stable-diffusion-guidance`` keeps threestudio's meaning of its ``guidance_scale`` and
converts it once before calling this function. threestudio's VSD guidance already uses this convention.
"""

from __future__ import annotations

from typing import Literal, Tuple

import torch
from torch import Tensor

from framework.errors import ConfigError

PREDICTION_TYPES = ("epsilon", "v_prediction")
WeightingStrategy = Literal["sds", "uniform", "fantasia3d", "ism"]


def classifier_free_guidance(eps_text: Tensor, eps_uncond: Tensor, scale: float) -> Tensor:
    """``eps_uncond + scale * (eps_text - eps_uncond)`` (diffusers convention; see the module docstring).

    Example:
        >>> classifier_free_guidance(torch.tensor([3.0]), torch.tensor([1.0]), 7.5)
        tensor([16.])
    """
    return eps_uncond + scale * (eps_text - eps_uncond)


def perpendicular_component(x: Tensor, y: Tensor) -> Tensor:
    """The part of each sample of ``x`` orthogonal to the same sample of ``y`` (B, ...): ``x - <x,y>/<y,y> y``
    (``<y,y>`` floored at 1e-6, as threestudio)."""
    dims = tuple(range(1, x.ndim))
    coef = (x * y).sum(dims) / (y * y).sum(dims).clamp_min(1e-6)
    return x - _per_sample(coef, x.ndim) * y


def perp_neg_guidance(eps_pos: Tensor, eps_uncond: Tensor, eps_negs: Tensor, weights: Tensor, scale: float) -> Tensor:
    """Perp-Neg (arXiv 2304.04968): ``eps_uncond + scale (e_pos + sum_k w_k perp(e_k, e_pos))`` with
    ``e_pos = eps_pos - eps_uncond`` and ``e_k = eps_neg_k - eps_uncond``.

    Shapes: eps_pos, eps_uncond (B, C, h, w); eps_negs (B, K, C, h, w); weights (B, K) (negative values push away).
    """
    e_pos = eps_pos - eps_uncond
    total = e_pos
    for k in range(eps_negs.shape[1]):
        w = _per_sample(weights[:, k].to(e_pos.dtype), e_pos.ndim)
        total = total + w * perpendicular_component(eps_negs[:, k] - eps_uncond, e_pos)
    return eps_uncond + scale * total


def _per_sample(v: Tensor, ndim: int) -> Tensor:
    return v.reshape(v.shape[0], *([1] * (ndim - 1)))


class NoiseSchedule:
    """``alphas_cumprod`` and ``prediction_type`` of one diffusers scheduler, with the maps between eps, v and x_t.

    ``t`` is a (B,) integer tensor of training timesteps in ``[0, num_train_timesteps)``; tensors are (B, C, h, w).
    """

    def __init__(self, scheduler, key: str = "pretrained_model_name_or_path"):
        self.prediction_type: str = scheduler.config.prediction_type
        if self.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(
                f"{key}: the model's scheduler predicts '{self.prediction_type}'; only epsilon and v_prediction "
                "models can be used for score distillation"
            )
        self.num_train_timesteps: int = int(scheduler.config.num_train_timesteps)
        if self.num_train_timesteps < 1:
            raise ConfigError(
                f"{key}: the model's scheduler has num_train_timesteps {self.num_train_timesteps}; a diffusion model "
                "needs at least 1 (1000 for Stable Diffusion): fix scheduler/scheduler_config.json or use another model"
            )
        self.alphas_cumprod: Tensor = scheduler.alphas_cumprod.detach().to(torch.float32).clone()
        ab = self.alphas_cumprod
        if ab.shape != (self.num_train_timesteps,) or not bool(((ab >= 0) & (ab <= 1)).all()):
            raise ConfigError(
                f"{key}: the model's scheduler gives noise levels (alphas_cumprod) outside [0, 1] or not one per "
                "timestep; check the betas in scheduler/scheduler_config.json"
            )

    def same_forward_process(self, other: "NoiseSchedule") -> bool:
        """Whether ``other`` noises latents exactly as this schedule does."""
        return self.num_train_timesteps == other.num_train_timesteps and torch.equal(
            self.alphas_cumprod, other.alphas_cumprod
        )

    def alpha_bar(self, t: Tensor) -> Tensor:
        """``alpha_bar_t`` as a float32 (B,) tensor on ``t``'s device."""
        if self.alphas_cumprod.device != t.device:
            self.alphas_cumprod = self.alphas_cumprod.to(t.device)
        return self.alphas_cumprod[t.long()]

    def alpha_sigma(self, t: Tensor, ndim: int) -> Tuple[Tensor, Tensor]:
        """``(alpha_t, sigma_t)``, each shaped (B, 1, ..., 1) with ``ndim`` dimensions."""
        ab = self.alpha_bar(t)
        return _per_sample(ab.sqrt(), ndim), _per_sample((1.0 - ab).sqrt(), ndim)

    def add_noise(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """``x_t = alpha_t * x0 + sigma_t * eps``."""
        alpha, sigma = self.alpha_sigma(t, x0.ndim)
        return alpha * x0 + sigma * eps

    def to_eps(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """The noise prediction of a model output: itself for eps models, ``alpha_t * v + sigma_t * x_t`` for v."""
        if self.prediction_type == "epsilon":
            return model_output
        alpha, sigma = self.alpha_sigma(t, x_t.ndim)
        return alpha * model_output + sigma * x_t

    def training_target(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """What the model is trained to predict at ``x_t = add_noise(x0, eps, t)``: ``eps`` or ``v``."""
        if self.prediction_type == "epsilon":
            return eps
        alpha, sigma = self.alpha_sigma(t, x0.ndim)
        return alpha * eps - sigma * x0

    def weight(self, t: Tensor, strategy: WeightingStrategy, ndim: int) -> Tensor:
        """Score-distillation weight ``w(t)`` shaped (B, 1, ..., 1).

        ``sds``: ``1 - alpha_bar_t`` (DreamFusion); ``uniform``: 1;
        ``fantasia3d``: ``sqrt(alpha_bar_t) (1 - alpha_bar_t)``; ``ism``: ``sqrt((1 - alpha_bar_t) / alpha_bar_t)``
        (LucidDreamer's, sigma_t / alpha_t).
        """
        ab = self.alpha_bar(t)
        if strategy == "sds":
            w = 1.0 - ab
        elif strategy == "uniform":
            w = torch.ones_like(ab)
        elif strategy == "fantasia3d":
            w = ab.sqrt() * (1.0 - ab)
        elif strategy == "ism":
            w = ((1.0 - ab) / ab).sqrt()
        else:
            raise ConfigError(f"weighting_strategy: unknown '{strategy}'; use sds, uniform, fantasia3d or ism")
        return _per_sample(w, ndim)
