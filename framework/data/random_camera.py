"""``random-camera-datamodule``: random cameras around the origin for text-to-3D, and orbits for validation and test.

Training batch ``i`` is the batch of training step ``i``: its resolution (``resolution_milestones``) and its
progressive view ranges (``progressive_until``) are read from ``i``, and every random number comes from the generator
it is given (see ``framework.data.base``). Lightning fetching a batch ahead of its step, a resumed run and each DDP
rank therefore all see exactly the batches an uninterrupted single-process run would.

The sampling follows threestudio's ``RandomCameraIterableDataset``: elevation uniform in degrees or uniform on the
sphere (half the batches each), azimuth stratified over the batch (``batch_uniform_azimuth``), uniform distance and
field of view, then perturbations of the position (uniform), the look-at center and the up vector (normal), and a
light position per camera (``dreamfusion``: around the camera direction; ``magic3d``: within 60 degrees of it).
Coordinates: ``framework.data.cameras``.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Dict, List, Literal, Tuple, Union

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from framework import registry
from framework.config import Bounds, ImageSide, NonNegativeFloat, PositiveFloat, Step
from framework.data.base import BaseDataModule
from framework.data.cameras import camera_batch

Elevation = Annotated[float, Bounds(ge=-90, le=90)]
"""An elevation in degrees: -90 (below) to 90 (above)."""
FieldOfView = Annotated[float, Bounds(gt=0, lt=180)]
"""A vertical field of view in degrees, strictly between 0 and 180."""
BatchSize = Annotated[int, Bounds(ge=1, le=4096)]
"""Cameras per training batch (each renders a whole image)."""
Views = Annotated[int, Bounds(ge=1, le=100000)]
"""Validation or test views (one rendered image each)."""


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def _as_list(value: Union[int, List[int]]) -> List[int]:
    return [value] if isinstance(value, int) else list(value)


@registry.register("data", "random-camera-datamodule")
class RandomCameraDataModule(BaseDataModule):
    """Random training cameras (progressive resolution) and orbit cameras for validation and test."""

    @dataclass
    class Config:
        height: Union[ImageSide, List[ImageSide]] = field(default_factory=lambda: [64, 512])
        """Training image height, or one height per resolution stage (see resolution_milestones)."""
        width: Union[ImageSide, List[ImageSide]] = field(default_factory=lambda: [64, 512])
        """Training image width, or one width per resolution stage."""
        batch_size: Union[BatchSize, List[BatchSize]] = field(default_factory=lambda: [1, 1])
        """Cameras per training batch, or one batch size per resolution stage."""
        resolution_milestones: List[Step] = field(default_factory=lambda: [5000])
        """Steps at which the next height/width/batch_size stage starts (one fewer than the stages)."""
        eval_height: ImageSide = 512
        """Height of validation and test renders."""
        eval_width: ImageSide = 512
        """Width of validation and test renders."""
        n_val_views: Views = 1
        """Number of validation views, evenly spaced in azimuth starting at 0."""
        n_test_views: Views = 120
        """Number of test views (the frames of the orbit video), evenly spaced over a full turn."""
        elevation_range: Tuple[Elevation, Elevation] = (-10.0, 45.0)
        """Training elevation range in degrees (-90 below, 90 above)."""
        azimuth_range: Tuple[float, float] = (-180.0, 180.0)
        """Training azimuth range in degrees (0 is the +x axis, 90 the +y axis)."""
        camera_distance_range: Tuple[PositiveFloat, PositiveFloat] = (1.0, 1.5)
        """Training camera distance range from the origin."""
        fovy_range: Tuple[FieldOfView, FieldOfView] = (40.0, 70.0)
        """Training vertical field of view range in degrees."""
        camera_perturb: NonNegativeFloat = 0.0
        """Half-width of the uniform noise added to each camera position coordinate."""
        center_perturb: NonNegativeFloat = 0.0
        """Standard deviation of the normal noise added to the look-at center."""
        up_perturb: NonNegativeFloat = 0.0
        """Standard deviation of the normal noise added to the up vector."""
        light_position_perturb: NonNegativeFloat = 1.0
        """dreamfusion light sampling: standard deviation of the noise added to the camera position."""
        light_distance_range: Tuple[PositiveFloat, PositiveFloat] = (0.8, 1.5)
        """Distance range of the point light from the origin."""
        eval_elevation_deg: Elevation = 15.0
        """Elevation of the validation and test orbit, in degrees."""
        eval_camera_distance: PositiveFloat = 1.5
        """Camera distance of the validation and test orbit."""
        eval_fovy_deg: FieldOfView = 70.0
        """Vertical field of view of validation and test views, in degrees."""
        light_sample_strategy: Literal["dreamfusion", "magic3d"] = "dreamfusion"
        """dreamfusion: light around the camera direction; magic3d: light within 60 degrees of the camera direction."""
        batch_uniform_azimuth: bool = True
        """Stratify the azimuths of a batch so that they cover the azimuth range."""
        progressive_until: Step = 0
        """Widen elevation and azimuth ranges linearly from the front view to the full ones until this step (0: off)."""
        rays_d_normalize: bool = True
        """Normalise ray directions (depth is then a distance along the ray)."""

    cfg: Config

    def configure(self) -> None:
        cfg = self.cfg
        self.heights = _as_list(cfg.height)
        self.widths = _as_list(cfg.width)
        self.batch_sizes = _as_list(cfg.batch_size)
        n = max(len(self.heights), len(self.widths), len(self.batch_sizes))
        for key, values in (("height", self.heights), ("width", self.widths), ("batch_size", self.batch_sizes)):
            if not values:
                raise self.config_error(key, "is an empty list; give a value or one value per resolution stage")
            if len(values) == 1 and n > 1:
                values *= n
            elif len(values) != n:
                raise self.config_error(
                    key,
                    f"has {len(values)} stages but another of height/width/batch_size has {n}; give each the same "
                    "number of values (or a single value)",
                )
        milestones = list(cfg.resolution_milestones)
        if n == 1:
            milestones = []
        elif len(milestones) != n - 1:
            raise self.config_error(
                "resolution_milestones", f"{n} resolution stages need {n - 1} milestones, got {milestones}"
            )
        if milestones != sorted(milestones):
            raise self.config_error("resolution_milestones", f"must increase, got {milestones}")
        self.milestones = milestones
        for key in ("elevation_range", "azimuth_range", "camera_distance_range", "fovy_range", "light_distance_range"):
            low, high = getattr(cfg, key)
            if high < low:
                raise self.config_error(key, f"expected [low, high] with low <= high, got [{low}, {high}]")
        self.global_step = 0

    # ----------------------------------------------------------------------------------------------------- schedules
    def stage(self, step: int) -> int:
        """Index of the resolution stage in force at ``step``."""
        return bisect.bisect_right(self.milestones, step)

    def resolution(self, step: int) -> Tuple[int, int, int]:
        """``(height, width, batch_size)`` of training batches at ``step``."""
        s = self.stage(step)
        return self.heights[s], self.widths[s], self.batch_sizes[s]

    def view_ranges(self, step: int) -> Tuple[Tuple[float, float], Tuple[float, float]]:
        """Elevation and azimuth ranges (degrees) at ``step``, widened from the front view until ``progressive_until``.
        """
        cfg = self.cfg
        r = 1.0 if cfg.progressive_until <= 0 else min(1.0, step / cfg.progressive_until)
        e0 = cfg.eval_elevation_deg
        elevation = ((1 - r) * e0 + r * cfg.elevation_range[0], (1 - r) * e0 + r * cfg.elevation_range[1])
        azimuth = (r * cfg.azimuth_range[0], r * cfg.azimuth_range[1])
        return elevation, azimuth

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        """Record the step; training batches read their step from their index, so nothing else changes here."""
        self.global_step = global_step

    # ------------------------------------------------------------------------------------------------------ training
    def sample_train(self, index: int, gen: torch.Generator) -> Dict[str, Any]:
        """Training batch of step ``index``; every random number is drawn from ``gen``."""
        cfg = self.cfg
        height, width, b = self.resolution(index)
        (elev_lo, elev_hi), (azi_lo, azi_hi) = self.view_ranges(index)

        if torch.rand((), generator=gen).item() < 0.5:
            # uniform in degrees (denser near the poles than the sphere's area)
            elevation_deg = _uniform(gen, b, elev_lo, elev_hi)
        else:
            # uniform on the sphere's area: sin(elevation) uniform
            s = _uniform(gen, b, math.sin(math.radians(elev_lo)), math.sin(math.radians(elev_hi)))
            elevation_deg = torch.rad2deg(torch.asin(s.clamp(-1.0, 1.0)))
        if cfg.batch_uniform_azimuth:
            azimuth_deg = (torch.rand(b, generator=gen) + torch.arange(b)) / b * (azi_hi - azi_lo) + azi_lo
        else:
            azimuth_deg = _uniform(gen, b, azi_lo, azi_hi)
        distances = _uniform(gen, b, *cfg.camera_distance_range)
        fovy_deg = _uniform(gen, b, *cfg.fovy_range)

        camera_offsets = (torch.rand(b, 3, generator=gen) * 2.0 - 1.0) * cfg.camera_perturb
        centers = torch.randn(b, 3, generator=gen) * cfg.center_perturb
        up = torch.tensor([0.0, 0.0, 1.0]).expand(b, 3) + torch.randn(b, 3, generator=gen) * cfg.up_perturb

        batch = camera_batch(
            elevation_deg,
            azimuth_deg,
            distances,
            fovy_deg,
            height,
            width,
            centers=centers,
            up=up,
            camera_offsets=camera_offsets,
            rays_d_normalize=cfg.rays_d_normalize,
        )
        batch["light_positions"] = self._sample_lights(batch["camera_positions"], gen)
        return batch

    def _sample_lights(self, camera_positions: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        b = camera_positions.shape[0]
        light_distances = _uniform(gen, b, *cfg.light_distance_range)
        if cfg.light_sample_strategy == "dreamfusion":
            noise = torch.randn(b, 3, generator=gen) * cfg.light_position_perturb
            return F.normalize(camera_positions + noise, dim=-1) * light_distances[:, None]
        # magic3d: azimuth anywhere, elevation 30-90 degrees above the plane facing the camera direction
        local_z = F.normalize(camera_positions, dim=-1)
        local_x = torch.stack([local_z[:, 1], -local_z[:, 0], torch.zeros_like(local_z[:, 0])], dim=-1)
        # a camera exactly above or below the origin has no horizontal direction: pick +x
        degenerate = local_x.norm(dim=-1, keepdim=True) < 1e-6
        local_x = torch.where(degenerate, torch.tensor([1.0, 0.0, 0.0]).expand_as(local_x), local_x)
        local_x = F.normalize(local_x, dim=-1)
        local_y = F.normalize(torch.linalg.cross(local_z, local_x, dim=-1), dim=-1)
        rotation = torch.stack([local_x, local_y, local_z], dim=-1)
        light_azimuth = torch.rand(b, generator=gen) * 2 * math.pi - math.pi
        light_elevation = torch.rand(b, generator=gen) * math.pi / 3 + math.pi / 6
        local = torch.stack(
            [
                light_distances * torch.cos(light_elevation) * torch.cos(light_azimuth),
                light_distances * torch.cos(light_elevation) * torch.sin(light_azimuth),
                light_distances * torch.sin(light_elevation),
            ],
            dim=-1,
        )
        return (rotation @ local[:, :, None])[:, :, 0]

    # -------------------------------------------------------------------------------------------------- evaluation
    def val_dataset(self) -> Dataset:
        return OrbitViews(self.cfg, self.cfg.n_val_views)

    def test_dataset(self) -> Dataset:
        return OrbitViews(self.cfg, self.cfg.n_test_views)


class OrbitViews(Dataset):
    """``n`` views on a circle at the eval elevation, distance and field of view; azimuths ``360 k / n`` degrees.

    Each item is a batch of size 1 (the keys of a training batch, plus ``index``); rays are built per item, so a
    120-view 512x512 test set costs no memory up front. The azimuths never repeat the first view at the end, so the
    test frames make a seamless loop.
    """

    def __init__(self, cfg: RandomCameraDataModule.Config, n_views: int):
        super().__init__()
        self.cfg = cfg
        self.n_views = n_views
        self.azimuth_deg = torch.arange(n_views, dtype=torch.float32) * (360.0 / n_views)

    def __len__(self) -> int:
        return self.n_views

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if not 0 <= index < self.n_views:
            raise IndexError(index)
        cfg = self.cfg
        batch = camera_batch(
            torch.tensor([cfg.eval_elevation_deg], dtype=torch.float32),
            self.azimuth_deg[index : index + 1],
            torch.tensor([cfg.eval_camera_distance], dtype=torch.float32),
            torch.tensor([cfg.eval_fovy_deg], dtype=torch.float32),
            cfg.eval_height,
            cfg.eval_width,
            rays_d_normalize=cfg.rays_d_normalize,
        )
        batch["light_positions"] = batch["camera_positions"].clone()
        batch["index"] = index
        return batch
