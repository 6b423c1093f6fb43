"""``nerf-volume-renderer``: volume rendering of a geometry's density and a material's colour, over a background.

For each ray, with samples ``i`` (interval ``delta_i``, position ``t_i``) and weights
``w_i = T_i (1 - exp(-sigma_i delta_i))``:

* ``opacity = sum w_i``; ``depth = sum w_i t_i`` (not divided by the opacity);
* ``comp_rgb_fg = sum w_i rgb_i``; ``comp_rgb = comp_rgb_fg + (1 - opacity) * background``;
* ``z_variance = sum w'_i (t_i - sum w'_j t_j)^2`` with ``w' = w / opacity``, zeroed where ``opacity <= 0.5``
  (HiFA's depth-variance regulariser);
* ``comp_normal = (normalize(sum w_i n_i) + 1) / 2 * opacity`` when normals are computed (for display).

Samples come from ``framework.renderers.sampling``: nerfacc's occupancy-grid marcher on CUDA (threestudio's path),
the PyTorch sampler elsewhere (``sampler: auto``); both skip the occupancy grid's empty cells. The grid (nerfacc's
``OccGridEstimator``, a buffer of this module, so it is saved in checkpoints) is refreshed every
``grid_update_interval`` training steps through ``update_step``, or on demand with ``update_occupancy``. A fresh grid
counts every cell as occupied (threestudio's starts empty and relies on the update at step 0).

Outputs are ``(B, H, W, C)`` images; in training mode the per-sample tensors (``weights``, ``t_points``,
``t_intervals``, ``t_dirs``, ``ray_indices``, ``points`` and the geometry's outputs, packed) are returned too, for
regularisers. In eval mode the networks see at most ``eval_chunk_size`` samples at a time (the PyTorch sampler,
which lays out every candidate sample, renders chunks of ``eval_chunk_size // num_samples_per_ray`` rays).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple

import nerfacc
import torch
import torch.nn.functional as F
from torch import Tensor

from framework import registry
from framework.config import (
    Bounds,
    NonNegativeFloat,
    NonNegativeInt,
    Probability,
    Step,
    Steps,
    config_error,
)
from framework.geometry.base import BaseImplicitGeometry
from framework.renderers.base import BaseRenderer
from framework.renderers.sampling import Samples, render_weights, sample_nerfacc, sample_torch

PER_RAY_KEYS = ("comp_rgb_fg", "opacity", "depth", "z_variance", "comp_normal")


def nerfacc_cuda_available() -> bool:
    """Whether nerfacc's CUDA extension loads (building it on first use if a CUDA toolkit is present)."""
    if not torch.cuda.is_available():
        return False
    if not hasattr(nerfacc_cuda_available, "_ok"):
        try:
            from nerfacc.cuda._backend import _C

            nerfacc_cuda_available._ok = _C is not None  # type: ignore[attr-defined]
        except Exception:
            nerfacc_cuda_available._ok = False  # type: ignore[attr-defined]
    return nerfacc_cuda_available._ok  # type: ignore[attr-defined]


@registry.register("renderer", "nerf-volume-renderer")
class NeRFVolumeRenderer(BaseRenderer):
    """NeRF volume renderer with occupancy-grid empty-space skipping (nerfacc)."""

    samples_normals = True

    @dataclass
    class Config(BaseRenderer.Config):
        num_samples_per_ray: Annotated[int, Bounds(ge=1, le=65536)] = 512
        """Samples per ray before skipping: sets nerfacc's step (box diagonal / this) or the PyTorch sampler's count."""
        eval_chunk_size: NonNegativeInt = 160000
        """Most samples per network evaluation in eval mode (bounds memory at large eval resolutions); 0: no chunks."""
        randomized: bool = True
        """Jitter sample positions in training (stratified sampling); eval is always deterministic."""
        near_plane: NonNegativeFloat = 0.0
        """Samples start at this distance from the ray origin."""
        far_plane: Annotated[float, Bounds(gt=0, allow_inf=True)] = 1e10
        """Samples end at this distance from the ray origin."""
        return_comp_normal: bool = False
        """Also compute normals (when the geometry has them) and return comp_normal, even if the material needs none."""
        estimator: Literal["occgrid"] = "occgrid"
        """Transmittance estimator: nerfacc's occupancy grid."""
        grid_prune: bool = True
        """Skip empty space with the occupancy grid (false: every cell is occupied, no visibility pruning)."""
        prune_alpha_threshold: bool = True
        """Also drop samples with alpha below alpha_threshold and after early stop (one extra density pass)."""
        alpha_threshold: Probability = 0.01
        """Alpha below which a sample is dropped (nerfacc caps it at the grid's mean occupancy)."""
        early_stop_eps: Probability = 1e-4
        """Transmittance below which the rest of a ray is dropped."""
        grid_resolution: Annotated[int, Bounds(ge=1, le=1024)] = 32
        """Occupancy grid cells per axis."""
        grid_update_interval: Steps = 16
        """Training steps between occupancy grid updates."""
        grid_warmup_steps: Step = 256
        """Until this step every cell is re-evaluated at each update; afterwards a quarter of the cells."""
        grid_occ_threshold: NonNegativeFloat = 0.01
        """Occupancy (density x render step) above which a cell counts as occupied (capped at the mean)."""
        grid_ema_decay: Probability = 0.95
        """Decay of a cell's occupancy between updates (its new value is max(decayed, measured))."""
        sampler: Literal["auto", "nerfacc", "torch"] = "auto"
        """auto: nerfacc's CUDA marcher for CUDA rays when its extension loads, the PyTorch sampler otherwise."""

    cfg: Config

    def configure(self, geometry: Any = None, material: Any = None, background: Any = None, **kwargs: Any) -> None:
        super().configure(geometry, material, background)
        cfg = self.cfg
        if cfg.near_plane >= cfg.far_plane:
            raise self.config_error(
                "near_plane", f"{cfg.near_plane} is not below far_plane ({cfg.far_plane}); set near_plane < far_plane"
            )
        if not isinstance(geometry, BaseImplicitGeometry):
            raise config_error(
                f"{self._prefix or 'renderer'}_type",
                f"nerf-volume-renderer integrates a density field, which {type(geometry).__name__} does not have (it "
                "is a surface); render it with nvdiff-rasterizer",
            )
        if material.requires_normal and not geometry.has_normal:
            raise geometry.config_error(
                "normal_type", f"the material ({type(material).__name__}) needs normals; set it to finite_difference, "
                "analytic or pred"
            )
        r = cfg.radius
        self.estimator = nerfacc.OccGridEstimator(roi_aabb=self.bbox.view(-1), resolution=cfg.grid_resolution, levels=1)
        self.estimator.binaries.fill_(True)
        self.render_step_size = 1.732 * 2 * r / cfg.num_samples_per_ray

    @property
    def randomized(self) -> bool:
        return self.training and self.cfg.randomized

    def computes_normals(self) -> bool:
        """Whether a render asks the geometry for normals."""
        wanted = self.material.requires_normal or self.cfg.return_comp_normal or self.normals_requested
        return bool(wanted and self.geometry.has_normal)

    # ---------------------------------------------------------------------------------------------- occupancy grid
    def _occ_eval_fn(self, x: Tensor) -> Tensor:
        # occupancy ~ 1 - exp(-density * step) ~ density * step for small steps (threestudio's choice)
        return self.geometry.forward_density(x) * self.render_step_size

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        """Refresh the occupancy grid every ``grid_update_interval`` training steps (threestudio's schedule)."""
        if self.cfg.grid_prune and self.training and not on_load_weights:
            if global_step % self.cfg.grid_update_interval == 0:
                self.update_occupancy(global_step)

    @torch.no_grad()
    def update_occupancy(self, step: int = 0) -> None:
        """Re-evaluate the occupancy grid now (all cells before ``grid_warmup_steps``), in any mode."""
        if not self.cfg.grid_prune:
            return
        cfg = self.cfg
        self.estimator._update(
            step=step,
            occ_eval_fn=self._occ_eval_fn,
            occ_thre=cfg.grid_occ_threshold,
            ema_decay=cfg.grid_ema_decay,
            warmup_steps=cfg.grid_warmup_steps,
        )

    # --------------------------------------------------------------------------------------------------- sampling
    def resolve_sampler(self, device: torch.device) -> str:
        """The sampler used for rays on ``device`` (``nerfacc`` or ``torch``)."""
        choice = self.cfg.sampler
        if choice == "auto":
            return "nerfacc" if device.type == "cuda" and nerfacc_cuda_available() else "torch"
        if choice == "nerfacc" and not (device.type == "cuda" and nerfacc_cuda_available()):
            raise self.config_error("sampler", "'nerfacc' needs CUDA rays and nerfacc's CUDA extension; use 'auto'")
        return choice

    def _sigma_fn(self, positions: Tensor) -> Tensor:
        chunk = self.cfg.eval_chunk_size
        if self.training or chunk <= 0 or positions.shape[0] <= chunk:
            return self.geometry.forward_density(positions)[..., 0]
        return torch.cat([self._sigma_fn(positions[i : i + chunk]) for i in range(0, positions.shape[0], chunk)])

    def sample(self, rays_o: Tensor, rays_d: Tensor, sampler: Optional[str] = None) -> Samples:
        """Packed samples along flat rays ``(N, 3)`` with empty-space skipping (no gradient)."""
        cfg = self.cfg
        sampler = sampler or self.resolve_sampler(rays_o.device)
        visibility = cfg.grid_prune and cfg.prune_alpha_threshold
        sigma_fn = self._sigma_fn if visibility else None
        alpha_thre = min(cfg.alpha_threshold, float(self.estimator.occs.mean())) if visibility else 0.0
        early_stop_eps = cfg.early_stop_eps if cfg.grid_prune else 0.0
        if sampler == "nerfacc":
            return sample_nerfacc(
                self.estimator,
                rays_o,
                rays_d,
                sigma_fn,
                cfg.near_plane,
                cfg.far_plane,
                self.render_step_size,
                alpha_thre,
                early_stop_eps,
                self.randomized,
            )
        return sample_torch(
            self.estimator,
            self.bbox.view(-1),
            rays_o,
            rays_d,
            cfg.num_samples_per_ray,
            sigma_fn,
            cfg.near_plane,
            cfg.far_plane,
            cfg.grid_prune,
            alpha_thre,
            early_stop_eps,
            self.randomized,
        )

    # -------------------------------------------------------------------------------------------------- rendering
    def _shade(
        self, positions: Tensor, t_dirs: Tensor, t_lights: Tensor, **kwargs: Any
    ) -> Tuple[Dict[str, Tensor], Tensor]:
        """Geometry and material at packed samples; in eval mode in chunks of ``eval_chunk_size`` samples."""
        n = positions.shape[0]
        chunk = self.cfg.eval_chunk_size
        if self.training or chunk <= 0 or n <= chunk:
            geo_out = self.geometry(positions, output_normal=self.computes_normals())
            rgb = self.material(viewdirs=t_dirs, positions=positions, light_positions=t_lights, **geo_out, **kwargs)
            return geo_out, rgb
        geo_parts, rgb_parts = [], []
        for i in range(0, n, chunk):
            geo, rgb = self._shade(positions[i : i + chunk], t_dirs[i : i + chunk], t_lights[i : i + chunk], **kwargs)
            geo_parts.append(geo)
            rgb_parts.append(rgb)
        return {k: torch.cat([g[k] for g in geo_parts]) for k in geo_parts[0]}, torch.cat(rgb_parts)

    def render_rays(
        self, rays_o: Tensor, rays_d: Tensor, light_positions: Tensor, sampler: Optional[str] = None, **kwargs: Any
    ) -> Dict[str, Tensor]:
        """Render flat rays ``(N, 3)``: per-ray outputs ``(N, C)`` and packed per-sample outputs."""
        n_rays = rays_o.shape[0]
        samples = self.sample(rays_o, rays_d, sampler)
        ray_indices = samples.ray_indices
        t_starts, t_ends = samples.t_starts[:, None], samples.t_ends[:, None]
        t_positions = samples.t_positions[:, None]
        t_dirs = rays_d[ray_indices]
        positions = rays_o[ray_indices] + t_dirs * t_positions
        geo_out, rgb = self._shade(positions, t_dirs, light_positions[ray_indices], **kwargs)
        weights = render_weights(samples, geo_out["density"][:, 0], n_rays)[:, None]

        def accumulate(w: Tensor, values: Optional[Tensor]) -> Tensor:
            return nerfacc.accumulate_along_rays(w[:, 0], values=values, ray_indices=ray_indices, n_rays=n_rays)

        opacity = accumulate(weights, None)
        out = {
            "opacity": opacity,
            "depth": accumulate(weights, t_positions),
            "comp_rgb_fg": accumulate(weights, rgb),
        }
        normalized = weights / opacity.clamp(min=1e-5)[ray_indices]
        z_mean = accumulate(normalized, t_positions)
        z_variance = accumulate(normalized, (t_positions - z_mean[ray_indices]) ** 2)
        out["z_variance"] = z_variance * (opacity > 0.5).to(z_variance.dtype)
        if "normal" in geo_out:
            comp_normal = F.normalize(accumulate(weights, geo_out["normal"]), dim=-1)
            out["comp_normal"] = (comp_normal + 1.0) / 2.0 * opacity
        out.update(
            {
                "weights": weights,
                "t_points": t_positions,
                "t_intervals": t_ends - t_starts,
                "t_dirs": t_dirs,
                "ray_indices": ray_indices,
                "points": positions,
                **geo_out,
            }
        )
        return out

    def forward(
        self,
        rays_o: Tensor,
        rays_d: Tensor,
        light_positions: Tensor,
        bg_color: Optional[Tensor] = None,
        sampler: Optional[str] = None,
        **kwargs: Any,
    ) -> Dict[str, Tensor]:
        """Render ``(B, H, W, 3)`` rays lit by ``light_positions (B, 3)``.

        ``bg_color``: ``(B, 3)`` or ``(B, H, W, 3)`` replaces the background module's colour. ``sampler`` forces a
        sampler for this call. Other keywords go to the material (e.g. ``shading``, ``ambient_ratio``).
        """
        batch_size, height, width = rays_o.shape[:3]
        flat_o = rays_o.reshape(-1, 3)
        flat_d = rays_d.reshape(-1, 3)
        flat_l = light_positions.reshape(-1, 1, 1, 3).expand(-1, height, width, -1).reshape(-1, 3)
        n_rays = flat_o.shape[0]

        # eval: the PyTorch sampler lays out rays x num_samples_per_ray candidates, so it renders chunks of rays;
        # nerfacc's samples are sparse, so all rays are sampled at once and the network runs in chunks (_shade)
        sampler = sampler or self.resolve_sampler(flat_o.device)
        chunk = n_rays
        if not self.training and self.cfg.eval_chunk_size > 0 and sampler == "torch":
            chunk = max(1, self.cfg.eval_chunk_size // self.cfg.num_samples_per_ray)
        if chunk >= n_rays:
            out = self.render_rays(flat_o, flat_d, flat_l, sampler, **kwargs)
        else:
            pieces: List[Dict[str, Tensor]] = [
                self.render_rays(flat_o[i : i + chunk], flat_d[i : i + chunk], flat_l[i : i + chunk], sampler, **kwargs)
                for i in range(0, n_rays, chunk)
            ]
            out = {k: torch.cat([p[k] for p in pieces], dim=0) for k in PER_RAY_KEYS if k in pieces[0]}

        comp_rgb_bg = self.background(dirs=rays_d)
        if bg_color is None:
            bg = comp_rgb_bg
        else:
            bg = bg_color.to(comp_rgb_bg)
            if bg.shape[:-1] == (batch_size,):
                bg = bg[:, None, None, :].expand(-1, height, width, -1)
        bg = bg.reshape(n_rays, -1)
        comp_rgb = out["comp_rgb_fg"] + bg * (1.0 - out["opacity"])

        images = {
            "comp_rgb": comp_rgb,
            "comp_rgb_bg": comp_rgb_bg,
            **{k: out[k] for k in PER_RAY_KEYS if k in out},
        }
        result = {k: v.reshape(batch_size, height, width, -1) for k, v in images.items()}
        if self.training:
            result.update({k: v for k, v in out.items() if k not in PER_RAY_KEYS})
        return result
