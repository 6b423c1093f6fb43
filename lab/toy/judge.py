"""Judging a toy image (a sample of the toy prior, a render of a toy run) without a learned classifier.

* colour: the mean colour of the foreground (pixels away from the background colour), divided by its brightest
  channel so shading cancels, matched to the nearest colour word of ``lab.toy.scenes.COLOURS`` (normalised the
  same way).
* shape: the silhouette, cropped to its bounding box and scaled to a fixed square (so distance and field of view
  cancel), matched by IoU against a bank of ground-truth silhouettes of every shape, normalised the same way and
  rendered from cameras drawn as the training renders were; the shape of the best match wins.
On the ground-truth renders the colour is always right and the shape at least 90% of the time (a mug whose handle
is hidden behind it is a cylinder), which a test checks.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Dict, Tuple

import torch
from torch import Tensor

from lab.toy.dataset import IMAGE_SIZE, sample_cameras
from lab.toy.scenes import COLOURS, SHAPES, render

BACKGROUND_DISTANCE = 0.12
"""A pixel is foreground when some channel differs this much from the background colour (images in [0, 1])."""


def foreground(images: Tensor) -> Tensor:
    """Foreground masks ``(B, H, W)`` of RGB images ``(B, H, W, 3)`` in [0, 1] on a plain background.

    The background colour is the median of each image's two-pixel border (samples of the prior have an off-white
    background, renders a white one).
    """
    border = torch.cat(
        [images[:, :2].flatten(1, 2), images[:, -2:].flatten(1, 2), images[:, :, :2].flatten(1, 2),
         images[:, :, -2:].flatten(1, 2)],
        dim=1,
    )
    background = border.median(dim=1).values  # (B, 3)
    return (images - background[:, None, None, :]).abs().max(dim=-1).values > BACKGROUND_DISTANCE


def _chroma(rgb: Tensor) -> Tensor:
    return rgb / rgb.max(dim=-1, keepdim=True).values.clamp(min=1e-6)


def colour_of(images: Tensor) -> list:
    """The colour word of each image ``(B, H, W, 3)``; ``"none"`` for an image without foreground."""
    names = list(COLOURS)
    refs = _chroma(torch.tensor([COLOURS[n] for n in names]))
    masks = foreground(images)
    out = []
    for img, m in zip(images, masks):
        if m.sum() < 4:
            out.append("none")
            continue
        mean = _chroma(img[m].mean(dim=0))
        out.append(names[int((refs - mean).norm(dim=-1).argmin())])
    return out


NORMALISED_SIZE = 32
"""Side of the square silhouettes are scaled to before matching."""


def largest_component(mask: Tensor) -> Tensor:
    """The largest 8-connected component of a bool mask ``(H, W)`` (stray pixels of a sample dropped)."""
    from scipy import ndimage

    labels, n = ndimage.label(mask.numpy(), structure=[[1, 1, 1], [1, 1, 1], [1, 1, 1]])
    if n <= 1:
        return mask
    sizes = ndimage.sum(mask.numpy(), labels, index=range(1, n + 1))
    return torch.from_numpy(labels == 1 + int(sizes.argmax()))


def normalise_silhouettes(masks: Tensor) -> Tensor:
    """The largest component of each mask ``(B, H, W)``, cropped to its bounding box (squared about the centre) and
    resized to ``NORMALISED_SIZE``; an empty mask stays empty."""
    out = torch.zeros(masks.shape[0], NORMALISED_SIZE, NORMALISED_SIZE, dtype=torch.bool)
    for k, m in enumerate(masks):
        m = largest_component(m)
        rows, cols = torch.where(m)
        if rows.numel() == 0:
            continue
        r0, r1, c0, c1 = rows.min().item(), rows.max().item() + 1, cols.min().item(), cols.max().item() + 1
        side = max(r1 - r0, c1 - c0)
        cr, cc = (r0 + r1) / 2, (c0 + c1) / 2
        top, left = int(round(cr - side / 2)), int(round(cc - side / 2))
        padded = torch.nn.functional.pad(m.float(), (side, side, side, side))
        crop = padded[top + side : top + 2 * side, left + side : left + 2 * side]
        out[k] = torch.nn.functional.interpolate(crop[None, None], size=NORMALISED_SIZE, mode="area")[0, 0] > 0.5
    return out


@lru_cache(maxsize=4)
def silhouette_bank(n_views: int = 120, seed: int = 1234, size: int = IMAGE_SIZE) -> Dict[str, Tensor]:
    """Ground-truth silhouettes ``(n_views, NORMALISED_SIZE, NORMALISED_SIZE)`` bool of every shape, cameras as in
    training (cached: do not modify the result)."""
    gen = torch.Generator().manual_seed(seed)
    cams = sample_cameras(n_views, gen, size)
    return {shape: normalise_silhouettes(render(shape, "red", cams, supersample=1)[1] > 0.5) for shape in SHAPES}


def shape_of(images: Tensor, bank: Dict[str, Tensor]) -> Tuple[list, Tensor]:
    """The best-matching shape of each image ``(B, H, W, 3)`` and the best IoU ``(B,)``."""
    masks = normalise_silhouettes(foreground(images))
    best_shape, best_iou = [], []
    for m in masks:
        scores = {}
        for shape, sil in bank.items():
            inter = (sil & m).flatten(1).sum(-1).float()
            union = (sil | m).flatten(1).sum(-1).float().clamp(min=1)
            scores[shape] = (inter / union).max()
        shape = max(scores, key=lambda s: float(scores[s]))
        best_shape.append(shape)
        best_iou.append(scores[shape])
    return best_shape, torch.stack(best_iou)
