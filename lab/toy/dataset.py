"""The toy prior's training set: renders of every (colour, shape) pair from random cameras, with their prompts.

Cameras come from the project's own sampler (``random-camera-datamodule``) with the ranges below, so the prior sees
objects at the sizes and from the views the toy text-to-3D recipes render. Prompts use the exact wording the prompt
processor produces: ``"a red cube"``, ``"an orange cube"``, and with a view suffix (``", front view"``, side, back,
overhead, chosen by the camera as ``framework.prompt_processors.base.view_directions`` does with its default
thresholds) for most images. A small text encoder with random weights only understands the wordings it was trained on,
so the recipes must prompt with these words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from framework.prompt_processors.base import view_directions
from lab.toy.scenes import COLOURS, SHAPES, render

IMAGE_SIZE = 64
"""Side of the training images (the latents are IMAGE_SIZE / 4)."""
CAMERA_DISTANCE_RANGE = (1.3, 1.7)
"""Camera distances of the training renders (the toy recipes use the same)."""
FOVY_RANGE = (40.0, 55.0)
"""Vertical fields of view of the training renders, degrees."""
ELEVATION_RANGE = (-10.0, 60.0)
"""Elevations of most training cameras, degrees."""
OVERHEAD_RANGE = (60.0, 89.0)
"""Elevations of the overhead share of the cameras (the prompt processor calls > 60 degrees overhead)."""
OVERHEAD_SHARE = 0.15
"""Share of cameras drawn from OVERHEAD_RANGE."""
VIEW_SUFFIX_SHARE = 0.75
"""Share of images whose prompt carries the view suffix; the rest get the plain prompt."""
VIEW_THRESHOLDS = dict(front_threshold=45.0, back_threshold=45.0, overhead_threshold=60.0)
"""The prompt processor's default view thresholds, which the toy recipes keep."""


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


SHAPELESS_NOUN = "object"
"""The noun of a prompt that names a colour but no shape: ``"a red object"``."""

WORDINGS = ("full", "shape", "colour", "empty")
"""What a training prompt says about its image: colour and shape (``"a red cube"``), the shape only
(``"a cube"``), the colour only (``"a red object"``), or nothing (``""``)."""


def base_prompt(colour: str, shape: str) -> str:
    """``"a red cube"``, ``"an orange mug"``."""
    return f"{article(colour)} {colour} {shape}"


def shape_prompt(shape: str) -> str:
    """``"a cube"``: the shape, any colour."""
    return f"{article(shape)} {shape}"


def colour_prompt(colour: str) -> str:
    """``"a red object"``: the colour, any shape."""
    return f"{article(colour)} {colour} {SHAPELESS_NOUN}"


def worded(colour: str, shape: str, wording: str) -> str:
    """The prompt of an image of ``colour`` ``shape`` in one of ``WORDINGS`` (without a view suffix)."""
    if wording == "full":
        return base_prompt(colour, shape)
    if wording == "shape":
        return shape_prompt(shape)
    if wording == "colour":
        return colour_prompt(colour)
    if wording == "empty":
        return ""
    raise KeyError(f"unknown wording {wording!r}; the wordings are {', '.join(WORDINGS)}")


def parse_prompt(prompt: str, partial: bool = False) -> Tuple[Optional[str], Optional[str]]:
    """(colour, shape) named in a toy prompt such as ``"a red cube, front view"``.

    KeyError when the prompt does not name exactly one colour and one shape; with ``partial``, a prompt may leave
    either out (``"a cube"``, ``"a red object"``: None in its place) but must name one of them.
    """
    words = prompt.lower().replace(",", " ").split()
    colours = [w for w in words if w in COLOURS]
    shapes = [w for w in words if w in SHAPES]
    ok = (len(colours) <= 1 and len(shapes) <= 1 and colours + shapes) if partial else (
        len(colours) == 1 and len(shapes) == 1
    )
    if not ok:
        raise KeyError(
            f"the prompt {prompt!r} does not name exactly one toy colour ({', '.join(COLOURS)}) and one toy shape "
            f"({', '.join(SHAPES)}); toy prompts look like 'a red cube'"
            + (" (or 'a cube', 'a red object')" if partial else "")
        )
    return (colours[0] if colours else None), (shapes[0] if shapes else None)


def all_prompts() -> List[str]:
    """Every prompt the prior is trained on, in a fixed order (the empty prompt first): each full, shape-only and
    colour-only wording, plain and with each view suffix."""
    directions = view_directions(**VIEW_THRESHOLDS)
    bases = [base_prompt(c, s) for c in COLOURS for s in SHAPES]
    bases += [shape_prompt(s) for s in SHAPES] + [colour_prompt(c) for c in COLOURS]
    prompts = [""]
    for base in bases:
        prompts += [base] + [d.prompt(base) for d in directions]
    return prompts


def with_view(base: str, view: Optional[str]) -> str:
    """``base`` with the prompt processor's suffix of the view direction named ``view`` (None: no suffix)."""
    if view is None or not base:
        return base
    (direction,) = [d for d in view_directions(**VIEW_THRESHOLDS) if d.name == view]
    return direction.prompt(base)


def view_names(elevation: Tensor, azimuth: Tensor) -> List[str]:
    """The view direction (side, front, back, overhead) of each camera, as the prompt processor picks it."""
    directions = view_directions(**VIEW_THRESHOLDS)
    idx = torch.zeros_like(elevation, dtype=torch.long)
    for i, d in enumerate(directions):
        idx[d.condition(elevation, azimuth, torch.ones_like(elevation))] = i
    return [directions[int(i)].name for i in idx]


def view_prompts(base: str, elevation: Tensor, azimuth: Tensor) -> List[str]:
    """The view-dependent prompt of each camera, as the prompt processor picks it."""
    return [with_view(base, v) for v in view_names(elevation, azimuth)]


def sample_cameras(n: int, gen: torch.Generator, size: int) -> dict:
    """``n`` training cameras (a ``camera_batch`` at ``size``x``size``) from the random-camera data module."""
    from framework.data.random_camera import RandomCameraDataModule

    def module(elevation_range: Tuple[float, float]) -> RandomCameraDataModule:
        return RandomCameraDataModule(
            dict(
                height=size,
                width=size,
                batch_size=n,
                elevation_range=list(elevation_range),
                camera_distance_range=list(CAMERA_DISTANCE_RANGE),
                fovy_range=list(FOVY_RANGE),
                batch_uniform_azimuth=False,
            )
        )

    index = int(torch.randint(0, 2**31 - 1, (), generator=gen))
    low = module(ELEVATION_RANGE).sample_train(index, gen)
    high = module(OVERHEAD_RANGE).sample_train(index, gen)
    pick = torch.rand(n, generator=gen) < OVERHEAD_SHARE
    return {
        key: torch.where(pick.view(-1, *([1] * (value.dim() - 1))), high[key], value)
        for key, value in low.items()
        if isinstance(value, Tensor)
    }


@dataclass
class ToySet:
    """Images ``(N, 3, S, S)`` uint8 with the (colour, shape) and camera of each, and the view direction its
    prompt names (None for an image whose prompts carry no view suffix)."""

    images: Tensor
    labels: List[Tuple[str, str]]
    views: List[Optional[str]]
    elevation: Tensor
    azimuth: Tensor

    @property
    def prompts(self) -> List[str]:
        """The full prompt of each image (``"a red cube, front view"``)."""
        return [with_view(base_prompt(c, s), v) for (c, s), v in zip(self.labels, self.views)]

    def prompt(self, i: int, wording: str = "full") -> str:
        """The prompt of image ``i`` in one of ``WORDINGS``, with the image's view suffix."""
        colour, shape = self.labels[i]
        return with_view(worded(colour, shape, wording), self.views[i])


def make_set(n_per_pair: int, seed: int, size: int = IMAGE_SIZE, chunk: int = 50) -> ToySet:
    """Render ``n_per_pair`` views of every (colour, shape) pair; the same arguments give the same set."""
    gen = torch.Generator().manual_seed(seed)
    images, labels, views, elevations, azimuths = [], [], [], [], []
    for colour in COLOURS:
        for shape in SHAPES:
            done = 0
            while done < n_per_pair:
                n = min(chunk, n_per_pair - done)
                cams = sample_cameras(n, gen, 2 * size)
                rgb, _ = render(shape, colour, cams, supersample=2)
                images.append(to_uint8(rgb))
                suffixed = torch.rand(n, generator=gen) < VIEW_SUFFIX_SHARE
                names = view_names(cams["elevation"], cams["azimuth"])
                views += [v if w else None for v, w in zip(names, suffixed.tolist())]
                labels += [(colour, shape)] * n
                elevations.append(cams["elevation"])
                azimuths.append(cams["azimuth"])
                done += n
    return ToySet(torch.cat(images), labels, views, torch.cat(elevations), torch.cat(azimuths))


def to_uint8(rgb: Tensor) -> Tensor:
    """``(B, H, W, 3)`` in [0, 1] to ``(B, 3, H, W)`` uint8."""
    return (rgb.permute(0, 3, 1, 2) * 255).round().to(torch.uint8)


def random_colours(n: int, gen: torch.Generator) -> Tensor:
    """``(n, 3)`` RGB colours away from the palette: a third greys (black to white), a third desaturated shades
    (HSV saturation below 0.5), a third any hue at saturation 0.5..1; value (brightness) 0.05..1 throughout."""
    kind = torch.randint(0, 3, (n,), generator=gen)
    hue = torch.rand(n, generator=gen)
    value = 0.05 + 0.95 * torch.rand(n, generator=gen)
    sat = torch.rand(n, generator=gen)
    sat = torch.where(kind == 0, torch.zeros_like(sat), torch.where(kind == 1, 0.5 * sat, 0.5 + 0.5 * sat))
    return hsv_to_rgb(torch.stack([hue, sat, value], dim=-1))


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """``(..., 3)`` HSV in [0, 1] to RGB in [0, 1]."""
    h, s, v = hsv.unbind(-1)
    k = (torch.tensor([5.0, 3.0, 1.0]) + h[..., None] * 6.0) % 6.0
    return v[..., None] - v[..., None] * s[..., None] * (torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))


def make_offpalette_set(n: int, seed: int, size: int = IMAGE_SIZE, background_share: float = 0.2,
                        chunk: int = 50) -> Tensor:
    """``n`` renders ``(n, 3, S, S)`` uint8 of random shapes in colours of :func:`random_colours`, a
    ``background_share`` of them on a random background colour instead of white; cameras as :func:`make_set`.

    The prior never sees these: they teach its VAE every colour, so that its encoder tells grey, brown or a muted
    green from the palette's colours instead of mapping them onto the nearest one.
    """
    gen = torch.Generator().manual_seed(seed)
    shapes = list(SHAPES)
    images = []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        shape = shapes[int(torch.randint(0, len(shapes), (), generator=gen))]
        cams = sample_cameras(m, gen, 2 * size)
        albedo = random_colours(m, gen)
        background = torch.where((torch.rand(m, 1, generator=gen) < background_share), random_colours(m, gen),
                                 torch.ones(m, 3))
        rgb, _ = render(shape, albedo, cams, supersample=2, background=background)
        images.append(to_uint8(rgb))
    return torch.cat(images)


def pair_index() -> Dict[Tuple[str, str], int]:
    """Index of each (colour, shape) pair in the fixed order."""
    return {(c, s): i for i, (c, s) in enumerate((c, s) for c in COLOURS for s in SHAPES)}
