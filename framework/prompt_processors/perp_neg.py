"""Perp-Neg's view-dependent prompts (Armandpour et al. 2023, arXiv 2304.04968), as threestudio's prompt processor
builds them, against the Janus (multi-face) problem.

For each camera, the positive text interpolates the view prompts by azimuth (front-side for |azimuth| < 90, side-back
beyond; overhead cameras take the overhead prompt) and two view prompts serve as negatives with weights
``-f(r) = -(a exp(-b r) + c)`` (threestudio's ``perp_neg_f_*`` triples ``(a, b, c)``); the guidance then removes from
each negative direction its component along the positive one (:func:`framework.guidance.diffusion.perp_neg_guidance`).
Direction indices are the prompt processor's: 0 side, 1 front, 2 back, 3 overhead.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import Tensor

SIDE, FRONT, BACK, OVERHEAD = 0, 1, 2, 3

# threestudio's default (a, b, c) triples of the four negative weights
F_SB: Tuple[float, float, float] = (1.0, 0.5, -0.606)
"""The side negative between side and back views."""
F_FSB: Tuple[float, float, float] = (1.0, 0.5, 0.967)
"""The front negative between side and back views."""
F_FS: Tuple[float, float, float] = (4.0, 0.5, -2.426)
"""The front negative between front and side views."""
F_SF: Tuple[float, float, float] = (4.0, 0.5, -2.426)
"""The side negative between front and side views."""


def shifted_exponential_decay(a: float, b: float, c: float, r: Tensor) -> Tensor:
    """``a exp(-b r) + c``."""
    return a * torch.exp(-b * r) + c


def perp_neg_embeddings(
    direction: Tensor,
    azimuth_shifted: Tensor,
    text_vd: Tensor,
    uncond_vd: Tensor,
    f_sb: Sequence[float],
    f_fsb: Sequence[float],
    f_fs: Sequence[float],
    f_sf: Sequence[float],
) -> Tuple[Tensor, Tensor]:
    """Embeddings ``[pos (B); uncond (B); neg_1 (B); neg_2 (B)]`` and weights (B, 2).

    The negatives are stacked negative-major (all cameras' first negative, then all second ones), so that repeating
    the batch's latents four times pairs every row with its own camera's latents. (threestudio interleaves them per
    camera, which with more than one camera per batch evaluates a negative on another camera's latents.)

    ``direction`` (B,) are direction indices, ``azimuth_shifted`` (B,) azimuths in [-180, 180) degrees,
    ``text_vd`` / ``uncond_vd`` (4, N, C) the view prompts' and negative prompts' embeddings.
    """
    abs_az = azimuth_shifted.abs().to(text_vd.dtype)
    side, front, back, overhead = text_vd[SIDE], text_vd[FRONT], text_vd[BACK], text_vd[OVERHEAD]
    is_overhead = direction == OVERHEAD
    front_side = (abs_az < 90) & ~is_overhead
    r_fs = 1.0 - abs_az / 90.0  # 1: front, 0: side
    r_sb = 2.0 - abs_az / 90.0  # 1: side, 0: back
    r = torch.where(front_side, r_fs, r_sb).view(-1, 1, 1)
    pos = torch.where(front_side.view(-1, 1, 1), r * front + (1 - r) * side, r * side + (1 - r) * back)
    pos = torch.where(is_overhead.view(-1, 1, 1), overhead.expand_as(pos), pos)
    uncond = uncond_vd[direction]
    neg_a = torch.where(front_side.view(-1, 1, 1), front.expand_as(pos), side.expand_as(pos))
    neg_b = torch.where(front_side.view(-1, 1, 1), side.expand_as(pos), front.expand_as(pos))
    neg_a = torch.where(is_overhead.view(-1, 1, 1), uncond, neg_a)
    neg_b = torch.where(is_overhead.view(-1, 1, 1), uncond, neg_b)
    w_a = torch.where(front_side, -shifted_exponential_decay(*f_fs, r_fs), -shifted_exponential_decay(*f_sb, r_sb))
    w_b = torch.where(front_side, -shifted_exponential_decay(*f_sf, 1.0 - r_fs),
                      -shifted_exponential_decay(*f_fsb, r_sb))
    weights = torch.stack([w_a, w_b], dim=-1)
    weights = torch.where(is_overhead.view(-1, 1), torch.zeros_like(weights), weights)
    return torch.cat([pos, uncond, neg_a, neg_b], dim=0), weights
