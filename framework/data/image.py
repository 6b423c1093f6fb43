"""``image-datamodule``: pixels of one target image, for the image-fitting system (a smoke test of the framework).

Training batches are random pixel subsets; validation is the whole image; the test set is an "orbit" of the image
rotated about its centre, so that ``--test`` produces a video as the 3D systems do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch.utils.data import Dataset

from framework import registry
from framework.data.base import BaseDataModule
from framework.config import ImageSide, PositiveInt, config_error
from framework.data.random_camera import Views
from framework.utils.paths import require_regular_file


def pixel_coords(height: int, width: int) -> torch.Tensor:
    """(H*W, 2) pixel-centre coordinates (x, y) in [-1, 1], row-major."""
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width * 2 - 1
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x, y], dim=-1).reshape(-1, 2)


def procedural_image(height: int, width: int) -> torch.Tensor:
    """A (H, W, 3) test pattern in [0, 1]: a coloured disc on a checkerboard."""
    xy = pixel_coords(height, width).reshape(height, width, 2)
    checker = ((torch.floor((xy[..., 0] + 1) * 4) + torch.floor((xy[..., 1] + 1) * 4)) % 2)[..., None]
    base = 0.25 + 0.5 * checker * torch.tensor([0.9, 0.9, 1.0])
    disc = (xy.norm(dim=-1, keepdim=True) < 0.5).float()
    colour = torch.stack([0.5 + 0.5 * xy[..., 0], 0.5 + 0.5 * xy[..., 1], torch.full_like(xy[..., 0], 0.2)], -1)
    return (base * (1 - disc) + colour * disc).clamp(0, 1)


MAX_IMAGE_VALUES = 256 * 1024 * 1024
"""Largest target image read (pixels x channels, 8192 x 8192 RGBA): a bigger file is refused before it is decoded."""


def load_image(path: str, height: int, width: int, key: str = "data.image_path") -> torch.Tensor:
    """The image file ``path`` as ``(height, width, 3)`` floats in [0, 1] (area-resampled).

    8- and 16-bit integer images are scaled by their type's maximum (65535 for 16 bits), float images must already lie
    in [0, 1]; grey images are repeated to RGB; an alpha channel (grey+alpha or RGBA) is dropped, the colour kept
    as stored. Anything else (an animation, more than 4 channels, another sample type) is refused with one line.
    """
    import imageio.v3 as iio
    import numpy as np

    fix = "give a PNG/JPEG path or leave it empty"
    require_regular_file(path, f"config error: {key}: the file", fix)
    try:
        props = iio.improps(path)
    except Exception as e:
        raise config_error(key, f"cannot read '{path}' as an image ({_first_line(e)})") from None
    if props.shape is not None and int(np.prod(props.shape)) > MAX_IMAGE_VALUES:
        raise config_error(
            key, f"'{path}' has shape {tuple(props.shape)}, more than the {MAX_IMAGE_VALUES} values read; give a "
            "smaller image (it is resampled to data.height x data.width anyway)"
        )
    try:
        array = np.asarray(iio.imread(path))
    except Exception as e:
        raise config_error(key, f"cannot read '{path}' as an image ({_first_line(e)})") from None
    if array.ndim == 4 and array.shape[0] == 1:  # a one-frame animation or one-page stack: that image
        array = array[0]
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise config_error(
            key, f"'{path}' has shape {array.shape}; expected one image with 1 to 4 channels (grey, grey+alpha, RGB, "
            "RGBA), not an animation or a multi-page file"
        )
    if array.dtype == np.bool_:
        img = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.integer) and array.dtype.itemsize <= 2 and np.iinfo(array.dtype).min == 0:
        img = array.astype(np.float32) / float(np.iinfo(array.dtype).max)  # 255 for 8 bits, 65535 for 16
    elif np.issubdtype(array.dtype, np.floating):
        img = array.astype(np.float32)
        if not np.isfinite(img).all() or img.min() < 0.0 or img.max() > 1.0:
            raise config_error(
                key, f"'{path}' holds floating-point values outside [0, 1] (or NaN/Inf); save it as an 8- or 16-bit "
                "image, or scale it to [0, 1]"
            )
    else:
        raise config_error(key, f"'{path}' has samples of type {array.dtype}; save it as an 8- or 16-bit image")
    channels = img.shape[-1]
    colour = img[..., :1].repeat(3, axis=-1) if channels in (1, 2) else img[..., :3]
    tensor = torch.from_numpy(np.ascontiguousarray(colour))
    tensor = torch.nn.functional.interpolate(tensor.permute(2, 0, 1)[None], (height, width), mode="area")
    return tensor[0].permute(1, 2, 0).contiguous()


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


class _Views(Dataset):
    def __init__(self, image: torch.Tensor, n_views: int):
        self.image, self.n_views = image, n_views

    def __len__(self) -> int:
        return self.n_views

    def __getitem__(self, index: int) -> Dict[str, Any]:
        h, w = self.image.shape[:2]
        angle = 2 * math.pi * index / self.n_views
        rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        return {
            "index": index,
            "coords": pixel_coords(h, w) @ rot.T,
            "rgb": self.image.reshape(-1, 3),
            "height": h,
            "width": w,
        }


@registry.register("data", "image-datamodule")
class ImageDataModule(BaseDataModule):
    @dataclass
    class Config:
        image_path: Optional[str] = None
        """Target image file; empty: a procedural test pattern."""
        height: ImageSide = 64
        """Height the target is resampled to."""
        width: ImageSide = 64
        """Width the target is resampled to."""
        batch_size: PositiveInt = 1024
        """Random pixels per training step."""
        n_val_views: Views = 1
        """Validation views (rotations of the image)."""
        n_test_views: Views = 12
        """Test views: the image rotated through a full turn, one frame each."""

    cfg: Config

    def configure(self) -> None:
        c = self.cfg
        self.image = (
            load_image(c.image_path, c.height, c.width, self.key("image_path"))
            if c.image_path
            else procedural_image(c.height, c.width)
        )
        self.coords = pixel_coords(c.height, c.width)

    def sample_train(self, index: int, gen: torch.Generator) -> Dict[str, Any]:
        idx = torch.randint(0, self.coords.shape[0], (self.cfg.batch_size,), generator=gen)
        return {"coords": self.coords[idx], "rgb": self.image.reshape(-1, 3)[idx]}

    def val_dataset(self) -> Dataset:
        return _Views(self.image, self.cfg.n_val_views)

    def test_dataset(self) -> Dataset:
        return _Views(self.image, self.cfg.n_test_views)
