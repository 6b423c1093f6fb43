"""Metrics of a *set* of toy images (particles of a run, samples of the prior), for the ambiguity studies.

What ProlificDreamer claims of VSD against SDS is about sets: for a prompt that leaves the colour open (``"a cube"``)
VSD's particles should be like samples of the prior (many colours, each saturated and sharp), SDS's one smoothed,
desaturated mode. Per set of images ``(N, H, W, 3)`` in [0, 1] on a plain background:

* ``colours``: the judged colour of each image (``lab.toy.judge.colour_of``: a palette word, ``grey`` or ``none``);
* ``distinct_colours``: how many palette colours occur (grey and none are not colours);
* ``saturation``: the mean HSV saturation of the foreground pixels (mean per image, then over the set); the
  palette's renders are at about 0.85, a grey object at 0;
* ``edge_width``: silhouette sharpness as the width in pixels of the band where the image passes from background
  to object (mean over the set): about 1 for a ground-truth render (its anti-aliased edge), more for a blurred or
  half-transparent object;
* ``spread``: how different the images are from each other: the mean absolute RGB difference (0..1) over all
  pairs of images (0 when every particle is the same image; about 0.1-0.2 for different colours of one shape);
* ``histogram``: the share of each judged colour; ``tv_from`` another set's histogram: total variation distance
  ``0.5 * sum |p - q|`` (0 same, 1 disjoint).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from lab.toy.judge import BACKGROUND_DISTANCE, background_of, colour_of, foreground, saturation
from lab.toy.scenes import COLOURS

CATEGORIES = (*COLOURS, "grey", "none")
"""Every outcome of the colour judge."""


def colour_histogram(colours: Sequence[str]) -> Dict[str, float]:
    """Share of each outcome of :data:`CATEGORIES` among judged ``colours``."""
    n = max(len(colours), 1)
    return {c: sum(x == c for x in colours) / n for c in CATEGORIES}


def total_variation(p: Dict[str, float], q: Dict[str, float]) -> float:
    """``0.5 * sum_c |p_c - q_c|`` over the categories of either histogram."""
    keys = set(p) | set(q)
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys)


def uniform_palette() -> Dict[str, float]:
    """Every palette colour equally likely."""
    return {c: 1.0 / len(COLOURS) for c in COLOURS}


def foreground_saturation(images: Tensor) -> Tensor:
    """``(N,)`` mean HSV saturation of each image's foreground pixels (0 for an image without foreground)."""
    masks = foreground(images)
    sat = saturation(images)
    return torch.stack([sat[k][m].mean() if m.any() else sat.new_zeros(()) for k, m in enumerate(masks)])


def edge_width(images: Tensor) -> Tensor:
    """``(N,)`` width in pixels of each image's background-to-object transition (NaN without foreground).

    Per pixel, ``a = d / d_object`` clamped to [0, 1], where ``d`` is the largest channel difference from the
    background colour and ``d_object`` its 90th percentile over the foreground: 0 on the background, 1 on the object.
    The width is the number of pixels with ``0.1 < a < 0.9`` divided by the silhouette's perimeter (pixels of
    ``a > 0.5`` with a 4-neighbour below it).
    """
    d = (images - background_of(images)[:, None, None, :]).abs().amax(dim=-1)  # (N, H, W)
    out = []
    for dk in d:
        fg = dk > BACKGROUND_DISTANCE
        if fg.sum() < 4:
            out.append(torch.tensor(float("nan")))
            continue
        a = (dk / torch.quantile(dk[fg], 0.9).clamp(min=1e-6)).clamp(0.0, 1.0)
        inside = a > 0.5
        padded = torch.nn.functional.pad(inside[None, None].float(), (1, 1, 1, 1), value=0.0)[0, 0]
        neighbours_in = torch.stack([padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]).amin(0)
        perimeter = (inside & (neighbours_in < 0.5)).sum().clamp(min=1)
        soft = ((a > 0.1) & (a < 0.9)).sum()
        out.append(soft.float() / perimeter.float())
    return torch.stack(out)


def spread(images: Tensor) -> float:
    """Mean absolute RGB difference over all pairs of images ``(N, H, W, 3)`` (0 for a single image)."""
    n = images.shape[0]
    if n < 2:
        return 0.0
    flat = images.reshape(n, -1)
    diff = (flat[:, None, :] - flat[None, :, :]).abs().mean(-1)
    return (diff.sum() / (n * (n - 1))).item()


def set_metrics(images: Tensor, reference: Optional[Dict[str, float]] = None) -> Dict[str, object]:
    """The metrics of the module docstring for images ``(N, H, W, 3)``; ``tv_from_reference`` when a reference
    histogram is given (e.g. that of the prior's own samples)."""
    colours = colour_of(images)
    hist = colour_histogram(colours)
    out: Dict[str, object] = {
        "n": images.shape[0],
        "colours": colours,
        "distinct_colours": len({c for c in colours if c in COLOURS}),
        "saturation": foreground_saturation(images).mean().item(),
        "edge_width": edge_width(images).nanmean().item(),
        "spread": spread(images),
        "histogram": hist,
        "tv_from_uniform": total_variation({k: v for k, v in hist.items()}, uniform_palette()),
    }
    if reference is not None:
        out["tv_from_reference"] = total_variation(hist, reference)
    return out


def describe_colours(colours: List[str]) -> str:
    """``"red 3, blue 2, grey 1"``: the judged colours of a set, most frequent first."""
    counts = {c: colours.count(c) for c in CATEGORIES if colours.count(c)}
    return ", ".join(f"{c} {n}" for c, n in sorted(counts.items(), key=lambda kv: -kv[1]))
