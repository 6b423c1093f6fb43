"""The record of one score-distillation step, filled in by the guidance base and read by each rule.

The base fills it in order: the latents and draws, then ``x_t`` (by the rule's ``noisy_latents`` hook: the forward
process by default, DDIM inversion for ISM and SDI), then the pretrained model's separate predictions at ``x_t``
(``eps_text`` for the prompt, ``eps_uncond`` for threestudio's "uncond", the negative prompt; ``eps_null`` for the
empty prompt when the rule asks for it) and their guided combination ``eps_cfg``. A rule's ``update`` reads it and
returns the direction that ``w(t)`` multiplies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from torch import Tensor


@dataclass
class DistillationStep:
    """What one guidance call has drawn and computed. Tensors are (B, C, h, w) latents-shaped unless noted."""

    latents: Tensor
    """x0, fp32, attached to the scene's graph."""
    images: Optional[Tensor]
    """(B, 3, H, W) the renders in [0, 1] at the working size, attached (None for latents given directly)."""
    t: Tensor
    """(B,) integer timesteps."""
    noise: Tensor
    """eps with x_t = alpha_t x0 + sigma_t eps (drawn, or found by inversion)."""
    prompt_utils: Any
    """The prompt processor output."""
    elevation: Tensor
    """(B,) degrees."""
    azimuth: Tensor
    """(B,) degrees."""
    camera_distances: Tensor
    """(B,)"""
    c2w: Optional[Tensor]
    """(B, 4, 4) camera-to-world, or None."""
    mvp_mtx: Optional[Tensor]
    """(B, 4, 4) model-view-projection, or None."""
    text_embeddings: Optional[Tensor] = None
    """(2B, N, C) [cond; uncond] the pretrained model was run with (view-dependent if configured)."""
    noisy_latents: Optional[Tensor] = None
    """x_t, detached."""
    eps_text: Optional[Tensor] = None
    """Pretrained noise prediction for the prompt (Perp-Neg: its azimuth-interpolated prompt)."""
    eps_uncond: Optional[Tensor] = None
    """Pretrained noise prediction for the negative prompt (threestudio's uncond)."""
    eps_null: Optional[Tensor] = None
    """Pretrained noise prediction for the empty prompt (only for rules with ``needs_null``)."""
    eps_cfg: Optional[Tensor] = None
    """The guided prediction (classifier-free guidance, or Perp-Neg)."""
    baseline: Optional[Tensor] = None
    """The noise prediction a rule subtracts when it is not the noise itself (VSD: eps_phi); HiFA's image loss
    decodes its clean estimate (None: the render itself is the baseline image)."""
    extra: Dict[str, Any] = field(default_factory=dict)
    """Rule-specific values (ISM: x_s, s, eps_s)."""
