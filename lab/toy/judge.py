"""Judging a toy image (a sample of the toy prior, a render of a toy run).

* colour: the mean colour of the foreground (pixels away from the background colour), divided by its brightest
  channel so shading cancels, matched to the nearest colour word of ``lab.toy.scenes.COLOURS`` (normalised the
  same way). No learning involved; always right on ground-truth renders.
* shape: a small CNN (:class:`ShapeNet`, 0.1 M parameters, weights committed in ``lab/toy/shape_judge.safetensors``
  and rebuilt by ``scripts/train_toy_judge.py``) trained on ground-truth renders of every shape in random colours
  (palette, greys, muted shades, any hue) from the training cameras, blurred and noised so that it also reads the
  prior's soft samples. Silhouettes alone cannot tell a cylinder, a cone and a sphere seen from overhead apart (all
  are discs); the shading can. On held-out ground-truth renders it is right at least 98% of the time, which a test
  checks. (A silhouette matcher against a bank of ground-truth silhouettes, used before, was right on 92%.)
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from lab.toy.dataset import IMAGE_SIZE, sample_cameras
from lab.toy.scenes import COLOURS, SHAPES, render

BACKGROUND_DISTANCE = 0.12
"""A pixel is foreground when some channel differs this much from the background colour (images in [0, 1])."""


def background_of(images: Tensor) -> Tensor:
    """``(B, 3)``: the median colour of each image's two-pixel border."""
    border = torch.cat(
        [images[:, :2].flatten(1, 2), images[:, -2:].flatten(1, 2), images[:, :, :2].flatten(1, 2),
         images[:, :, -2:].flatten(1, 2)],
        dim=1,
    )
    return border.median(dim=1).values


def foreground(images: Tensor) -> Tensor:
    """Foreground masks ``(B, H, W)`` of RGB images ``(B, H, W, 3)`` in [0, 1] on a plain background.

    The background colour is the median of each image's two-pixel border (samples of the prior have an off-white
    background, renders a white one).
    """
    background = background_of(images)  # (B, 3)
    return (images - background[:, None, None, :]).abs().max(dim=-1).values > BACKGROUND_DISTANCE


def _chroma(rgb: Tensor) -> Tensor:
    return rgb / rgb.max(dim=-1, keepdim=True).values.clamp(min=1e-6)


GREY_SATURATION = 0.3
"""A foreground whose mean colour has an HSV saturation below this is judged ``"grey"``, not a colour word (the
palette's colours have saturation 0.8 and more; a grey or muted object is no colour of the prompt)."""


def saturation(rgb: Tensor) -> Tensor:
    """HSV saturation ``(...)`` of colours ``(..., 3)``: (max - min) / max."""
    top = rgb.max(dim=-1).values
    return (top - rgb.min(dim=-1).values) / top.clamp(min=1e-6)


def colour_of(images: Tensor) -> list:
    """The colour word of each image ``(B, H, W, 3)``; ``"grey"`` for a foreground without colour, ``"none"``
    for an image without foreground."""
    names = list(COLOURS)
    refs = _chroma(torch.tensor([COLOURS[n] for n in names]))
    masks = foreground(images)
    out = []
    for img, m in zip(images, masks):
        if m.sum() < 4:
            out.append("none")
            continue
        mean = img[m].mean(dim=0)
        if saturation(mean) < GREY_SATURATION:
            out.append("grey")
            continue
        out.append(names[int((refs - _chroma(mean)).norm(dim=-1).argmin())])
    return out


# --------------------------------------------------------------------------------------------- the CNN judge
SHAPE_JUDGE_FILE = Path(__file__).resolve().parent / "shape_judge.safetensors"
"""The committed weights of the shape judge."""


class ShapeNet(nn.Module):
    """Images ``(B, H, W, 3)`` in [0, 1] (64x64) -> logits ``(B, len(SHAPES))``. The background colour (border
    median) is subtracted first, so a white or off-white background reads the same."""

    def __init__(self, width: int = 24):
        super().__init__()
        w = width
        layers: List[nn.Module] = []
        for c_in, c_out in ((3, w), (w, 2 * w), (2 * w, 4 * w), (4 * w, 4 * w)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(4, c_out), nn.SiLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(4 * w, len(SHAPES))

    def forward(self, images: Tensor) -> Tensor:
        x = (images - background_of(images)[:, None, None, :]).permute(0, 3, 1, 2)
        if x.shape[-1] != 64 or x.shape[-2] != 64:
            x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
        return self.head(self.features(x).mean(dim=(2, 3)))


@lru_cache(maxsize=1)
def shape_judge() -> ShapeNet:
    """The committed shape judge, in eval mode (cached: do not modify it)."""
    from safetensors.torch import load_file

    net = ShapeNet()
    net.load_state_dict(load_file(str(SHAPE_JUDGE_FILE)))
    return net.eval().requires_grad_(False)


@torch.no_grad()
def shape_of(images: Tensor, judge: Optional[ShapeNet] = None) -> Tuple[list, Tensor]:
    """The shape word of each image ``(B, H, W, 3)`` in [0, 1] and the judge's probability for it ``(B,)``."""
    net = judge if judge is not None else shape_judge()
    names = list(SHAPES)
    probs = torch.cat([net(images[i : i + 256].float()).softmax(-1) for i in range(0, images.shape[0], 256)])
    conf, idx = probs.max(dim=-1)
    return [names[int(i)] for i in idx], conf


def judge_training_images(n_per_shape: int, seed: int) -> Tuple[Tensor, Tensor]:
    """Ground-truth renders ``(N, 64, 64, 3)`` in [0, 1] of every shape and their shape index ``(N,)``: half in the
    palette's colours, half in random ones (:func:`lab.toy.dataset.random_colours`), a fifth on an off-white
    background; cameras as in the prior's training set."""
    from lab.toy.dataset import random_colours

    gen = torch.Generator().manual_seed(seed)
    palette = torch.tensor(list(COLOURS.values()))
    images, labels = [], []
    for k, shape in enumerate(SHAPES):
        for start in range(0, n_per_shape, 50):
            m = min(50, n_per_shape - start)
            cams = sample_cameras(m, gen, 2 * IMAGE_SIZE)
            pick = palette[torch.randint(0, len(palette), (m,), generator=gen)]
            albedo = torch.where(torch.rand(m, 1, generator=gen) < 0.5, pick, random_colours(m, gen))
            grey = 0.85 + 0.15 * torch.rand(m, 1, generator=gen)
            background = torch.where(torch.rand(m, 1, generator=gen) < 0.2, grey.expand(m, 3), torch.ones(m, 3))
            rgb, _ = render(shape, albedo, cams, supersample=2, background=background)
            images.append(rgb)
            labels.append(torch.full((m,), k))
    return torch.cat(images), torch.cat(labels)


def augment(images: Tensor, gen: torch.Generator) -> Tensor:
    """Soften renders ``(B, H, W, 3)`` towards what samples of the prior look like: a random Gaussian blur
    (sigma up to 1.2 px), a shift of up to 3 px (the background fills in), brightness x0.85..1.15 and pixel noise."""
    b = images.shape[0]
    x = images.permute(0, 3, 1, 2)
    sigma = 0.05 + 1.15 * torch.rand(b, generator=gen)
    r = torch.arange(-3, 4, dtype=torch.float32)
    kernel = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = kernel / kernel.sum(-1, keepdim=True)  # (B, 7)
    bg = background_of(images)[:, :, None, None]
    x = x - bg
    x = F.pad(x, (3, 3, 3, 3))
    # separable blur, one kernel per image
    x = x.unfold(3, 7, 1)  # (B, 3, H+6, W, 7)
    x = (x * kernel[:, None, None, None, :]).sum(-1)
    x = x.unfold(2, 7, 1)  # (B, 3, H, W, 7)
    x = (x * kernel[:, None, None, None, :]).sum(-1)
    shift = torch.randint(-3, 4, (2,), generator=gen)
    x = torch.roll(x, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
    x = x * (0.85 + 0.3 * torch.rand(b, 1, 1, 1, generator=gen)) + bg
    x = x + 0.03 * torch.rand(b, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    return x.clamp(0.0, 1.0).permute(0, 2, 3, 1)


def train_shape_judge(n_per_shape: int = 600, steps: int = 3000, batch: int = 64, seed: int = 0,
                      log=print) -> ShapeNet:
    """Train :class:`ShapeNet` on :func:`judge_training_images` (seeded; a few minutes on one CPU thread)."""
    images, labels = judge_training_images(n_per_shape, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 2)
        net = ShapeNet()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    for step in range(steps):
        idx = torch.randint(0, images.shape[0], (batch,), generator=gen)
        loss = F.cross_entropy(net(augment(images[idx], gen)), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == steps - 1:
            log(f"shape judge step {step}: loss {loss.item():.4f}")
    return net.eval().requires_grad_(False)
