"""Reference scenes with closed-form renders, and the check that the renderer's two samplers agree.

``UniformSphere`` is a geometry of constant density ``sigma`` inside a ball. For a unit-direction ray whose chord
through the ball is ``[t0, t0 + L]``, the exact volume rendering is

* ``opacity = 1 - exp(-sigma L)``,
* ``depth = sum w t = t0 opacity + (1 - exp(-sigma L) (1 + sigma L)) / sigma``,
* ``z_variance`` (of the normalised weights, a truncated exponential) ``= 1 / sigma^2 - L^2 e^{-sigma L} / opacity^2``.

``compare_samplers`` renders the same rays with nerfacc's CUDA sampler and the PyTorch sampler; ``agreement_report``
does it on prepared scenes; from a GPU script::

    from lab.render_checks import agreement_report, format_report
    print(format_report(agreement_report("cuda")))
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.geometry.base import BaseImplicitGeometry


class UniformSphere(BaseImplicitGeometry):
    """Density ``sigma`` inside the ball ``|p - center| < radius``, zero outside; constant colour; radial normals.

    An implicit geometry (``forward``, ``forward_density``, ``has_normal``) in a bounding box of radius 1. Its features
    are the logit of ``color``, so ``no-material`` (sigmoid) shows ``color``.
    """

    has_normal = True

    def __init__(
        self,
        radius: float = 0.5,
        sigma: float = 5.0,
        center: Sequence[float] = (0.0, 0.0, 0.0),
        color: Sequence[float] = (0.2, 0.4, 0.6),
    ):
        super().__init__({"radius": 1.0})
        self.radius, self.sigma = float(radius), float(sigma)
        self.register_buffer("center", torch.tensor(center, dtype=torch.float32))
        self.register_buffer("color", torch.tensor(color, dtype=torch.float32))

    def forward_density(self, points: Tensor) -> Tensor:
        inside = (points - self.center).norm(dim=-1, keepdim=True) < self.radius
        return inside.to(points.dtype) * self.sigma

    def forward(self, points: Tensor, output_normal: bool = False) -> Dict[str, Tensor]:
        out = {
            "density": self.forward_density(points),
            "features": torch.logit(self.color).to(points).expand(*points.shape[:-1], 3),
        }
        if output_normal:
            normal = F.normalize(points - self.center, dim=-1)
            out["normal"] = out["shading_normal"] = normal
        return out

    def chord(self, rays_o: Tensor, rays_d: Tensor) -> Tuple[Tensor, Tensor]:
        """Entry distance ``t0`` (at least 0) and length ``L`` of each unit ray's chord through the ball (0: missed)."""
        oc = rays_o - self.center
        b = (oc * rays_d).sum(-1)
        c = (oc * oc).sum(-1) - self.radius**2
        disc = b * b - c
        root = torch.sqrt(disc.clamp(min=0.0))
        t0 = (-b - root).clamp(min=0.0)
        t1 = (-b + root).clamp(min=0.0)
        length = torch.where(disc > 0, t1 - t0, torch.zeros_like(t1))
        return t0, length

    def closed_form(self, rays_o: Tensor, rays_d: Tensor) -> Dict[str, Tensor]:
        """Exact ``opacity``, ``depth``, ``z_variance`` (masked at opacity 0.5, as rendered) per ray ``(...,)``."""
        t0, length = self.chord(rays_o, rays_d)
        s = self.sigma
        e = torch.exp(-s * length)
        opacity = 1.0 - e
        depth = t0 * opacity + (1.0 - e * (1.0 + s * length)) / s
        variance = 1.0 / s**2 - length**2 * e / opacity.clamp(min=1e-12) ** 2
        variance = torch.where(opacity > 0.5, variance, torch.zeros_like(variance))
        return {"opacity": opacity, "depth": depth, "z_variance": variance}


def _timed(fn: Any, device: torch.device) -> Tuple[Any, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start


@torch.no_grad()
def compare_samplers(
    renderer: Any,
    rays_o: Tensor,
    rays_d: Tensor,
    light_positions: Tensor,
    samplers: Sequence[str] = ("torch", "nerfacc"),
) -> Dict[str, float]:
    """Render ``(B, H, W, 3)`` rays deterministically (eval mode) with two samplers; differences and timings.

    Returns mean and max absolute differences of ``opacity`` and ``comp_rgb``, the mean depth difference over rays
    opaque (> 0.5) in both, and milliseconds per render for each sampler (after one warm-up render).
    """
    was_training = renderer.training
    renderer.eval()
    try:
        outs, report = [], {}
        for name in samplers:
            renderer(rays_o, rays_d, light_positions, sampler=name)  # warm-up (nerfacc may build its extension)
            out, seconds = _timed(lambda: renderer(rays_o, rays_d, light_positions, sampler=name), rays_o.device)
            outs.append(out)
            report[f"ms_{name}"] = seconds * 1000.0
        a, b = outs
        d_opacity = (a["opacity"] - b["opacity"]).abs()
        d_rgb = (a["comp_rgb"] - b["comp_rgb"]).abs()
        opaque = (a["opacity"] > 0.5) & (b["opacity"] > 0.5)
        d_depth = (a["depth"] - b["depth"]).abs()[opaque]
        report.update(
            {
                "opacity_mean_abs_diff": float(d_opacity.mean()),
                "opacity_max_abs_diff": float(d_opacity.max()),
                "rgb_mean_abs_diff": float(d_rgb.mean()),
                "rgb_max_abs_diff": float(d_rgb.max()),
                "depth_mean_abs_diff": float(d_depth.mean()) if d_depth.numel() else 0.0,
            }
        )
        return report
    finally:
        renderer.train(was_training)


def orbit_rays(
    height: int,
    width: int,
    elevation_deg: float = 15.0,
    azimuth_deg: float = 30.0,
    distance: float = 2.0,
    fovy_deg: float = 50.0,
) -> Dict[str, Tensor]:
    """One camera batch (``framework.data.cameras.camera_batch``) looking at the origin, lit from the camera."""
    from framework.data.cameras import camera_batch

    batch = camera_batch(
        torch.tensor([elevation_deg]),
        torch.tensor([azimuth_deg]),
        torch.tensor([distance]),
        torch.tensor([fovy_deg]),
        height,
        width,
    )
    batch["light_positions"] = batch["camera_positions"].clone()
    return batch


def agreement_report(
    device: str = "cuda",
    resolution: int = 64,
    num_samples_per_ray: int = 512,
    samplers: Sequence[str] = ("torch", "nerfacc"),
    blob_config: Optional[Dict[str, Any]] = None,
) -> Dict[str, Dict[str, float]]:
    """CPU-path (PyTorch sampler) vs CUDA-path (nerfacc) renders of two scenes on ``device``.

    Scenes: ``sphere`` (``UniformSphere``; its closed-form opacity error is reported for both samplers) and ``blob``
    (an ``implicit-volume`` at its blob initialisation with a random hash grid; ``blob_config`` overrides its config,
    threestudio's full-size hash grid by default). Both use ``no-material`` and a white
    ``solid-color-background``, with the occupancy grid updated from the scene before rendering.
    """
    from framework.backgrounds.solid_color import SolidColorBackground
    from framework.geometry.implicit_volume import ImplicitVolume
    from framework.materials.no_material import NoMaterial
    from framework.renderers.nerf_volume_renderer import NeRFVolumeRenderer

    dev = torch.device(device)
    torch.manual_seed(0)
    batch = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in orbit_rays(resolution, resolution).items()}
    scenes = {
        "sphere": UniformSphere(radius=0.5, sigma=20.0),
        "blob": ImplicitVolume(blob_config or {"pos_encoding_config": {"backend": "torch"}}),
    }
    report = {}
    for name, geometry in scenes.items():
        geometry = geometry.to(dev).eval()
        material, background = NoMaterial({}).to(dev), SolidColorBackground({}).to(dev)
        renderer = NeRFVolumeRenderer(
            {"num_samples_per_ray": num_samples_per_ray}, geometry=geometry, material=material, background=background
        ).to(dev)
        for step in range(4):
            renderer.update_occupancy(step)
        row = compare_samplers(renderer, batch["rays_o"], batch["rays_d"], batch["light_positions"], samplers)
        if isinstance(geometry, UniformSphere):
            exact = geometry.closed_form(batch["rays_o"], batch["rays_d"])["opacity"]
            renderer.eval()
            with torch.no_grad():
                for sampler in dict.fromkeys(samplers):
                    got = renderer(batch["rays_o"], batch["rays_d"], batch["light_positions"], sampler=sampler)
                    row[f"opacity_vs_exact_{sampler}"] = float((got["opacity"][..., 0] - exact).abs().mean())
        report[name] = row
    return report


def format_report(report: Dict[str, Dict[str, float]]) -> str:
    """``agreement_report`` as a plain-text table, one row per scene."""
    keys = sorted({k for row in report.values() for k in row})
    lines = ["scene   " + "  ".join(f"{k:>24}" for k in keys)]
    for scene, row in report.items():
        lines.append(f"{scene:<8}" + "  ".join(f"{row.get(k, math.nan):>24.6g}" for k in keys))
    return "\n".join(lines)
