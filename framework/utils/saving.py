"""Writing images, grids and videos of a run: used by every system, written once.

A grid is a row of panels, each a ``Panel``: ``rgb`` (H, W, 3) in [0, 1], ``normal`` (H, W, 3) in [-1, 1], or
``grayscale`` (H, W) or (H, W, 1) mapped through a colormap over ``data_range``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

# Control points of the 'jet'-like colormap used for grayscale panels (no matplotlib dependency).
_CMAP_POINTS = {
    "jet": np.array([[0.0, 0.0, 0.5], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.0, 0.0]]),
    "gray": np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]),
}


@dataclass
class Panel:
    """One image of a grid."""

    kind: str
    """'rgb', 'normal' or 'grayscale'."""
    img: torch.Tensor
    """The image, (H, W, C) or (H, W)."""
    data_range: Tuple[float, float] = (0.0, 1.0)
    """Value range mapped to [0, 1] (rgb, grayscale); normals always map [-1, 1]."""
    cmap: str = "jet"
    """Colormap of a grayscale panel: 'jet' or 'gray'."""


def colormap(x: np.ndarray, name: str = "jet") -> np.ndarray:
    """Map values in [0, 1] (any shape) to RGB in [0, 1] (shape + (3,)) by piecewise-linear interpolation."""
    points = _CMAP_POINTS[name]
    xs = np.linspace(0.0, 1.0, len(points))
    x = np.clip(x, 0.0, 1.0)
    return np.stack([np.interp(x, xs, points[:, c]) for c in range(3)], axis=-1)


def panel_to_uint8(panel: Panel) -> np.ndarray:
    """An (H, W, 3) uint8 image of ``panel``."""
    img = panel.img.detach().float().cpu().numpy()
    if panel.kind == "rgb":
        lo, hi = panel.data_range
        out = (img - lo) / (hi - lo)
    elif panel.kind == "normal":
        out = (img + 1.0) / 2.0
    elif panel.kind == "grayscale":
        if img.ndim == 3:
            img = img[..., 0]
        lo, hi = panel.data_range
        out = colormap((img - lo) / (hi - lo), panel.cmap)
    else:
        raise ValueError(f"unknown panel kind '{panel.kind}'; use 'rgb', 'normal' or 'grayscale'")
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=-1)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return (np.clip(np.nan_to_num(out[..., :3]), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def make_grid(panels: Sequence[Panel], gap: int = 0) -> np.ndarray:
    """Panels side by side (heights must match) as one (H, W, 3) uint8 image."""
    images = [panel_to_uint8(p) for p in panels]
    heights = {im.shape[0] for im in images}
    if len(heights) != 1:
        raise ValueError(f"grid panels must share a height, got {sorted(heights)}")
    if gap:
        spacer = np.full((images[0].shape[0], gap, 3), 255, dtype=np.uint8)
        images = [x for im in images for x in (im, spacer)][:-1]
    return np.concatenate(images, axis=1)


class Saver:
    """Writes under ``<trial>/save``; does nothing on ranks other than 0 (``enabled=False``)."""

    def __init__(self, save_dir: Optional[Path], enabled: bool = True):
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self.enabled = enabled and save_dir is not None

    def path(self, name: str) -> Path:
        assert self.save_dir is not None
        p = self.save_dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def save_image(self, name: str, img: np.ndarray) -> Optional[Path]:
        """Write a uint8 (H, W, 3) image as PNG."""
        if not self.enabled:
            return None
        import imageio.v3 as iio

        p = self.path(name)
        iio.imwrite(p, img)
        return p

    def save_grid(self, name: str, panels: Sequence[Panel]) -> Optional[np.ndarray]:
        """Write a grid of panels as PNG; returns the image (also on ranks that do not write)."""
        img = make_grid(panels)
        self.save_image(name, img)
        return img

    def save_video(self, name: str, frames: List[np.ndarray], fps: int = 30) -> Optional[Path]:
        """Write uint8 frames as an H.264 mp4 (ffmpeg from imageio-ffmpeg)."""
        if not self.enabled or not frames:
            return None
        import importlib.util

        import imageio

        p = self.path(name)
        if importlib.util.find_spec("imageio_ffmpeg") is None:
            # at the end of a long run a missing encoder should not fail it: the frames are saved already
            print(
                f"warning: the video {p} was not written: it needs the package imageio-ffmpeg (in requirements.txt), "
                "which is not installed; install it with 'pip install imageio-ffmpeg'",
                file=sys.stderr,
            )
            return None
        h, w = frames[0].shape[:2]
        # H.264 with yuv420p needs even sizes; pad by one pixel where needed.
        ph, pw = h % 2, w % 2
        if ph or pw:
            frames = [np.pad(f, ((0, ph), (0, pw), (0, 0)), mode="edge") for f in frames]
        with imageio.get_writer(p, format="FFMPEG", fps=fps, codec="libx264", quality=8, macro_block_size=1) as writer:
            for f in frames:
                writer.append_data(f)
        return p

    def save_images_as_video(self, name: str, image_paths: Sequence[Path], fps: int = 30) -> Optional[Path]:
        """Read PNG frames in order and write them as an mp4."""
        if not self.enabled:
            return None
        import imageio.v3 as iio

        return self.save_video(name, [iio.imread(p)[..., :3] for p in image_paths], fps=fps)
