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

``best_scale`` (:func:`best_scale`) separates a wrong size from a wrong shape: the IoU against the primitive scaled
uniformly about its centre, at the scale of ``SCALES`` where it is highest. The toy prior learnt from renders at
camera distances 1.3-1.7 and fields of view 40-55 degrees, so an object's apparent size varies by up to 1.9x across
its training images and a distilled object's size is only loosely pinned down.
"""

from __future__ import annotations

import torch

from framework.data.cameras import camera_batch
from lab.toy.scenes import render


SCALES = tuple(round(0.8 + 0.05 * i, 2) for i in range(11))
"""Uniform scales of the primitive that :func:`best_scale` tries: 0.8 to 1.3 in steps of 0.05."""


def ground_truth(shape: str, colour: str, batch: dict, scale: float = 1.0):
    """RGB ``(B, H, W, 3)`` and coverage ``(B, H, W)`` of the primitive, scaled by ``scale`` about its centre (the
    origin the cameras look at), for the cameras of a test batch."""
    height, width = int(batch["height"]), int(batch["width"])
    cams = camera_batch(
        batch["elevation"].float().cpu(),
        batch["azimuth"].float().cpu(),
        # seen from a camera looking at the origin, the primitive scaled by s is the primitive from 1/s the distance
        batch["camera_distances"].float().cpu() / scale,
        torch.rad2deg(batch["fovy"].float().cpu()),
        2 * height,
        2 * width,
    )
    return render(shape, colour, cams, supersample=2)


def scores(pred_rgb: torch.Tensor, pred_opacity: torch.Tensor, gt_rgb: torch.Tensor, gt_cover: torch.Tensor) -> dict:
    """``iou`` and ``colour_error`` of renders ``(N, H, W, 3)``, ``(N, H, W)`` against the ground truth."""
    both = (pred_opacity > 0.5) & (gt_cover > 0.5)
    colour_error = (pred_rgb - gt_rgb).abs().mean(-1)[both].mean().item() if both.any() else 1.0
    return {"iou": silhouette_iou(pred_opacity, gt_cover), "colour_error": colour_error}


def silhouette_iou(pred_opacity: torch.Tensor, gt_cover: torch.Tensor) -> float:
    """IoU of the pixels with opacity > 0.5 and those the primitive covers more than half of."""
    pred_mask, gt_mask = pred_opacity > 0.5, gt_cover > 0.5
    union = (pred_mask | gt_mask).sum().item()
    return (pred_mask & gt_mask).sum().item() / union if union else 0.0


def best_scale(pred_opacity: torch.Tensor, shape: str, batches: list, n_views: int = 12,
               scales: tuple = SCALES) -> tuple:
    """``(scale, iou)``: the silhouette IoU of ``pred_opacity`` ``(N, H, W)`` (one view per camera of ``batches``,
    in order) against ``shape`` scaled by each of ``scales``, on ``n_views`` views spread evenly over the orbit, at
    the scale where it is highest."""
    n = len(batches)
    index = sorted({round(i * n / min(n_views, n)) for i in range(min(n_views, n))})
    views = [batches[i] for i in index]
    offsets = [0]
    for b in batches:
        offsets.append(offsets[-1] + b["rays_o"].shape[0])
    pred = torch.cat([pred_opacity[offsets[i]:offsets[i + 1]] for i in index])
    best = (float("nan"), -1.0)
    for s in scales:
        iou = silhouette_iou(pred, torch.cat([ground_truth(shape, "red", b, scale=s)[1] for b in views]))
        if iou > best[1]:
            best = (float(s), iou)
    return best
