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
from typing import Dict, List, Tuple

import torch
from torch import Tensor

from framework.data.cameras import camera_batch
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


def base_prompt(colour: str, shape: str) -> str:
    """``"a red cube"``, ``"an orange mug"``."""
    return f"{article(colour)} {colour} {shape}"


def parse_prompt(prompt: str) -> Tuple[str, str]:
    """(colour, shape) named in a toy prompt such as ``"a red cube, front view"``; KeyError when there is none."""
    words = prompt.lower().replace(",", " ").split()
    colours = [w for w in words if w in COLOURS]
    shapes = [w for w in words if w in SHAPES]
    if len(colours) != 1 or len(shapes) != 1:
        raise KeyError(
            f"the prompt {prompt!r} does not name exactly one toy colour ({', '.join(COLOURS)}) and one toy shape "
            f"({', '.join(SHAPES)}); toy prompts look like 'a red cube'"
        )
    return colours[0], shapes[0]


def all_prompts() -> List[str]:
    """Every prompt the prior is trained on, in a fixed order (the empty prompt first)."""
    directions = view_directions(**VIEW_THRESHOLDS)
    prompts = [""]
    for colour in COLOURS:
        for shape in SHAPES:
            base = base_prompt(colour, shape)
            prompts += [base] + [d.prompt(base) for d in directions]
    return prompts


def view_prompts(base: str, elevation: Tensor, azimuth: Tensor) -> List[str]:
    """The view-dependent prompt of each camera, as the prompt processor picks it."""
    directions = view_directions(**VIEW_THRESHOLDS)
    idx = torch.zeros_like(elevation, dtype=torch.long)
    for i, d in enumerate(directions):
        idx[d.condition(elevation, azimuth, torch.ones_like(elevation))] = i
    return [directions[int(i)].prompt(base) for i in idx]


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
    """Images ``(N, 3, S, S)`` uint8, their prompts, and the (colour, shape) and camera of each."""

    images: Tensor
    prompts: List[str]
    labels: List[Tuple[str, str]]
    elevation: Tensor
    azimuth: Tensor


def make_set(n_per_pair: int, seed: int, size: int = IMAGE_SIZE, chunk: int = 50) -> ToySet:
    """Render ``n_per_pair`` views of every (colour, shape) pair; the same arguments give the same set."""
    gen = torch.Generator().manual_seed(seed)
    images, prompts, labels, elevations, azimuths = [], [], [], [], []
    for colour in COLOURS:
        for shape in SHAPES:
            base = base_prompt(colour, shape)
            done = 0
            while done < n_per_pair:
                n = min(chunk, n_per_pair - done)
                cams = sample_cameras(n, gen, 2 * size)
                rgb, _ = render(shape, colour, cams, supersample=2)
                images.append((rgb.permute(0, 3, 1, 2) * 255).round().to(torch.uint8))
                with_view = torch.rand(n, generator=gen) < VIEW_SUFFIX_SHARE
                viewed = view_prompts(base, cams["elevation"], cams["azimuth"])
                prompts += [v if w else base for v, w in zip(viewed, with_view.tolist())]
                labels += [(colour, shape)] * n
                elevations.append(cams["elevation"])
                azimuths.append(cams["azimuth"])
                done += n
    return ToySet(torch.cat(images), prompts, labels, torch.cat(elevations), torch.cat(azimuths))


def pair_index() -> Dict[Tuple[str, str], int]:
    """Index of each (colour, shape) pair in the fixed order."""
    return {(c, s): i for i, (c, s) in enumerate((c, s) for c in COLOURS for s in SHAPES)}
