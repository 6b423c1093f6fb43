"""Scoring a finished toy text-to-3D run against its ground-truth primitive (the trial is loaded and rendered by
``scripts/evaluate_toy.py``).

The trial's scene is rendered from its test orbit (the data module's ``n_test_views`` cameras at the eval elevation,
distance and field of view) and the primitive its prompt names (``"a red cube"``) is rendered from the same cameras
by ``lab.toy.scenes``. Two numbers, over all views together:

* ``iou``: silhouette IoU, pixels with rendered opacity > 0.5 against pixels the primitive covers more than half of.
  It is 1 for the right shape at the right place and orientation; a mirrored mug or a Janus object loses some.
* ``colour_error``: mean absolute RGB difference (0..1) between the render and the ground truth on the pixels both
  cover; 1.0 when they share none. The ground truth includes the toy renders' fixed lighting, which a radiance field
  can bake into its colours.

``reference_iou`` gives the scale: the best IoU any *other* shape of the toy set reaches against the ground truth on
the same cameras (how far a wrong but plausible object gets).
"""

from __future__ import annotations

import torch

from framework.data.cameras import camera_batch
from lab.toy.scenes import render


def ground_truth(shape: str, colour: str, batch: dict):
    """RGB ``(B, H, W, 3)`` and coverage ``(B, H, W)`` of the primitive for the cameras of a test batch."""
    height, width = int(batch["height"]), int(batch["width"])
    cams = camera_batch(
        batch["elevation"].float().cpu(),
        batch["azimuth"].float().cpu(),
        batch["camera_distances"].float().cpu(),
        torch.rad2deg(batch["fovy"].float().cpu()),
        2 * height,
        2 * width,
    )
    return render(shape, colour, cams, supersample=2)


def scores(pred_rgb: torch.Tensor, pred_opacity: torch.Tensor, gt_rgb: torch.Tensor, gt_cover: torch.Tensor) -> dict:
    """``iou`` and ``colour_error`` of renders ``(N, H, W, 3)``, ``(N, H, W)`` against the ground truth."""
    pred_mask = pred_opacity > 0.5
    gt_mask = gt_cover > 0.5
    inter = (pred_mask & gt_mask).sum().item()
    union = (pred_mask | gt_mask).sum().item()
    both = pred_mask & gt_mask
    colour_error = (pred_rgb - gt_rgb).abs().mean(-1)[both].mean().item() if inter > 0 else 1.0
    return {"iou": inter / union if union else 0.0, "colour_error": colour_error}
