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
from framework.errors import ConfigError


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


def load_image(path: str, height: int, width: int) -> torch.Tensor:
    import imageio.v3 as iio

    try:
        img = torch.from_numpy(iio.imread(path)).float()
    except FileNotFoundError:
        raise ConfigError(f"config error: data.image_path: no file '{path}'; give a PNG/JPEG path or leave it empty") from None
    except Exception as e:
        raise ConfigError(f"config error: data.image_path: cannot read '{path}' as an image ({e})") from None
    if img.ndim == 2:
        img = img[..., None].repeat(1, 1, 3)
    img = img[..., :3] / 255.0
    img = torch.nn.functional.interpolate(img.permute(2, 0, 1)[None], (height, width), mode="area")
    return img[0].permute(1, 2, 0).contiguous()


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
        height: int = 64
        """Height the target is resampled to."""
        width: int = 64
        """Width the target is resampled to."""
        batch_size: int = 1024
        """Random pixels per training step."""
        n_val_views: int = 1
        """Validation views (rotations of the image)."""
        n_test_views: int = 12
        """Test views: the image rotated through a full turn, one frame each."""

    cfg: Config

    def configure(self) -> None:
        c = self.cfg
        if c.height <= 0 or c.width <= 0 or c.batch_size <= 0:
            raise ConfigError("config error: data: height, width and batch_size must be positive")
        self.image = load_image(c.image_path, c.height, c.width) if c.image_path else procedural_image(c.height, c.width)
        self.coords = pixel_coords(c.height, c.width)

    def sample_train(self, index: int, gen: torch.Generator) -> Dict[str, Any]:
        idx = torch.randint(0, self.coords.shape[0], (self.cfg.batch_size,), generator=gen)
        return {"coords": self.coords[idx], "rgb": self.image.reshape(-1, 3)[idx]}

    def val_dataset(self) -> Dataset:
        return _Views(self.image, self.cfg.n_val_views)

    def test_dataset(self) -> Dataset:
        return _Views(self.image, self.cfg.n_test_views)
