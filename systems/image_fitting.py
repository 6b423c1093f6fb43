"""``image-fitting-system``: fits a 2D field to an image. No diffusion model; it exercises the whole framework
(registry, strict config, losses and schedules, parameter groups, checkpoints and resume, validation grids, an orbit
video, export) in seconds, and is the README's smoke run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from framework import registry
from framework.config import Bounds, ImageSide
from framework.utils.export_output import ExportOutput
from framework.utils.saving import Panel
from systems.base import BaseSystem


class ImageField(nn.Module):
    """A learnable feature grid (bilinear lookup) followed by a small MLP: (N, 2) coords -> (N, 3) colours."""

    def __init__(self, grid_resolution: int, n_features: int, hidden_dim: int):
        super().__init__()
        self.grid = nn.Parameter(torch.randn(1, n_features, grid_resolution, grid_resolution) * 0.1)
        self.network = nn.Sequential(
            nn.Linear(n_features + 2, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, 3)
        )

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        feats = F.grid_sample(self.grid, coords[None, None], align_corners=False, padding_mode="border")
        feats = feats[0, :, 0].T  # (N, C)
        return torch.sigmoid(self.network(torch.cat([feats, coords], dim=-1)))


@registry.register("system", "image-fitting-system")
class ImageFittingSystem(BaseSystem):
    @dataclass
    class Config(BaseSystem.Config):
        grid_resolution: Annotated[int, Bounds(ge=1, le=4096)] = 32
        """Side of the learnable feature grid."""
        n_features: Annotated[int, Bounds(ge=1, le=1024)] = 8
        """Channels of the feature grid."""
        hidden_dim: Annotated[int, Bounds(ge=1, le=16384)] = 32
        """Width of the MLP."""
        export_resolution: ImageSide = 128
        """Side of the image written by ``--export`` (the field sampled on a finer grid: ``field.png``)."""

    cfg: Config

    def configure(self) -> None:
        c = self.cfg
        self.field = ImageField(c.grid_resolution, c.n_features, c.hidden_dim)

    def training_losses(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        pred = self.field(batch["coords"])
        out: Dict[str, Any] = {"loss_mse": F.mse_loss(pred, batch["rgb"])}
        if self.loss_enabled("l1"):
            out["loss_l1"] = F.l1_loss(pred, batch["rgb"])
        with torch.no_grad():
            out["psnr"] = -10.0 * torch.log10(out["loss_mse"].clamp_min(1e-10))
        return out

    @torch.no_grad()
    def _render(self, batch: Dict[str, Any]) -> torch.Tensor:
        h, w = int(batch["height"]), int(batch["width"])
        return self.field(batch["coords"]).reshape(h, w, 3)

    def validation_panels(self, batch: Dict[str, Any]) -> List[Panel]:
        h, w = int(batch["height"]), int(batch["width"])
        pred = self._render(batch)
        target = batch["rgb"].reshape(h, w, 3)
        return [
            Panel("rgb", pred),
            Panel("rgb", target),
            Panel("grayscale", (pred - target).abs().mean(-1), data_range=(0.0, 0.5)),
        ]

    def test_panels(self, batch: Dict[str, Any]) -> List[Panel]:
        return [Panel("rgb", self._render(batch))]

    @torch.no_grad()
    def export_outputs(self) -> List[ExportOutput]:
        from framework.data.image import pixel_coords

        n = self.cfg.export_resolution
        img = self.field(pixel_coords(n, n).to(self.device)).reshape(n, n, 3)
        return [ExportOutput("field.png", (img.clamp(0, 1).cpu().numpy() * 255 + 0.5).astype("uint8"))]
