"""Ray sampling with empty-space skipping for the NeRF renderer: nerfacc's CUDA marcher, or a PyTorch one.

Both return packed samples (``Samples``): flat arrays of ray index and interval ``[t_start, t_end]`` plus the position
``t_position`` where the field is evaluated, sorted by ray then by distance.

* ``nerfacc``: ``OccGridEstimator.sampling`` (CUDA only) marches each ray with a fixed step
  ``render_step_size = 2 sqrt(3) radius / num_samples_per_ray`` (the box diagonal split into that many steps)
  through occupied cells of the occupancy grid, then drops samples with alpha below a threshold or behind a nearly
  opaque stretch (``early_stop_eps``), evaluating the density once for that.
* ``torch``: any device. Each ray's chord through the bounding box (``nerfacc.grid._ray_aabb_intersect``) is split
  into ``num_samples_per_ray`` equal intervals; the field is evaluated at a uniformly jittered point of each
  interval (stratified sampling; the midpoint when not randomized). Samples in empty cells of the same occupancy
  grid (``nerfacc.grid._query``) are dropped, then, as in nerfacc, samples with low alpha or after early stop.
  Dropped samples are exactly samples of zero density in the rendering sums, so rendering can use nerfacc's batched
  ``(n_rays, n_samples)`` functions on the full grid of intervals (``BatchedLayout``).

The two discretise the same integral differently (fixed step from the box entry vs. a fixed count per chord), so
their renders agree up to quadrature error, which ``lab.render_checks`` measures.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import nerfacc
import torch
from nerfacc.grid import _query, _ray_aabb_intersect
from torch import Tensor


class BatchedLayout(NamedTuple):
    """Where packed samples sit in the ``(n_rays, n_samples)`` grid of intervals of the PyTorch sampler."""

    mask: Tensor  # (n_rays, n_samples) bool: kept samples
    t_starts: Tensor  # (n_rays, n_samples)
    t_ends: Tensor  # (n_rays, n_samples)


class Samples(NamedTuple):
    """Packed samples; ``layout`` is set by the PyTorch sampler."""

    ray_indices: Tensor  # (S,) long
    t_starts: Tensor  # (S,)
    t_ends: Tensor  # (S,)
    t_positions: Tensor  # (S,)
    layout: Optional[BatchedLayout] = None


def sample_nerfacc(
    estimator: nerfacc.OccGridEstimator,
    rays_o: Tensor,
    rays_d: Tensor,
    sigma_fn: Optional[Callable[[Tensor], Tensor]],
    near_plane: float,
    far_plane: float,
    render_step_size: float,
    alpha_thre: float,
    early_stop_eps: float,
    stratified: bool,
) -> Samples:
    """nerfacc's occupancy-grid marcher (CUDA). ``sigma_fn(positions (S, 3)) -> (S,)`` enables visibility pruning."""

    def packed_sigma_fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tensor:
        t_mid = (t_starts + t_ends)[:, None] / 2.0
        return sigma_fn(rays_o[ray_indices] + rays_d[ray_indices] * t_mid)  # type: ignore[misc]

    with torch.no_grad():
        ray_indices, t_starts, t_ends = estimator.sampling(
            rays_o,
            rays_d,
            sigma_fn=packed_sigma_fn if sigma_fn is not None else None,
            near_plane=near_plane,
            far_plane=far_plane,
            render_step_size=render_step_size,
            alpha_thre=alpha_thre,
            stratified=stratified,
            cone_angle=0.0,
            early_stop_eps=early_stop_eps,
        )
    ray_indices = ray_indices.long()
    if ray_indices.numel() == 0:
        # one zero-length sample keeps the field in the graph (an all-empty batch still back-propagates)
        ray_indices = torch.zeros(1, dtype=torch.long, device=rays_o.device)
        t_starts = t_ends = torch.zeros(1, dtype=rays_o.dtype, device=rays_o.device)
    return Samples(ray_indices, t_starts, t_ends, (t_starts + t_ends) / 2.0)


def sample_torch(
    estimator: nerfacc.OccGridEstimator,
    aabb: Tensor,
    rays_o: Tensor,
    rays_d: Tensor,
    num_samples: int,
    sigma_fn: Optional[Callable[[Tensor], Tensor]],
    near_plane: float,
    far_plane: float,
    use_grid: bool,
    alpha_thre: float,
    early_stop_eps: float,
    stratified: bool,
) -> Samples:
    """The PyTorch sampler (module docstring). ``aabb (6,)``; ``sigma_fn(positions (S, 3)) -> (S,)``."""
    n_rays = rays_o.shape[0]
    with torch.no_grad():
        t_min, t_max, hit = _ray_aabb_intersect(rays_o, rays_d, aabb.view(1, 6))
        t_min = t_min[:, 0].clamp(min=near_plane)
        t_max = t_max[:, 0].clamp(max=far_plane)
        hit = hit[:, 0] & (t_max > t_min)
        t_min = torch.where(hit, t_min, torch.zeros_like(t_min))
        t_max = torch.where(hit, t_max, torch.zeros_like(t_max))
        step = (t_max - t_min) / num_samples
        k = torch.arange(num_samples, device=rays_o.device, dtype=rays_o.dtype)
        t_starts = t_min[:, None] + k[None, :] * step[:, None]
        t_ends = t_starts + step[:, None]
        if stratified:
            u = torch.rand(n_rays, num_samples, device=rays_o.device, dtype=rays_o.dtype)
        else:
            u = torch.full((n_rays, num_samples), 0.5, device=rays_o.device, dtype=rays_o.dtype)
        t_positions = t_starts + u * step[:, None]
        mask = hit[:, None].expand(n_rays, num_samples).clone()
        positions = rays_o[:, None, :] + rays_d[:, None, :] * t_positions[..., None]
        if use_grid:
            occupied, _ = _query(positions.reshape(-1, 3), estimator.binaries, estimator.aabbs[0])
            mask &= occupied.view(n_rays, num_samples).bool()
        if sigma_fn is not None and (alpha_thre > 0.0 or early_stop_eps > 0.0) and mask.any():
            sigmas = torch.zeros(n_rays, num_samples, device=rays_o.device, dtype=rays_o.dtype)
            sigmas[mask] = sigma_fn(positions[mask]).to(sigmas.dtype)
            visible = nerfacc.render_visibility_from_density(
                t_starts, t_ends, sigmas, early_stop_eps=early_stop_eps, alpha_thre=alpha_thre
            )
            mask &= visible
        if not mask.any():
            # one zero-length sample keeps the field in the graph (an all-empty batch still back-propagates)
            mask[0, 0] = True
            t_ends = t_ends.clone()
            t_ends[0, 0] = t_starts[0, 0]
        ray_indices = mask.nonzero()[:, 0]
    layout = BatchedLayout(mask, t_starts, t_ends)
    return Samples(ray_indices, t_starts[mask], t_ends[mask], t_positions[mask], layout)


def packed_weights(t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, ray_indices: Tensor) -> Tensor:
    """Rendering weights ``(S,)`` of packed samples sorted by ray, in PyTorch (nerfacc's packed form needs CUDA).

    The exclusive prefix sum of optical depth restarts at each ray: a global prefix sum (in float64, so that
    subtracting the sum up to the ray's first sample loses nothing) minus its value at that first sample.
    """
    tau = sigmas * (t_ends - t_starts)
    cumulative = torch.cumsum(tau.double(), dim=0)
    exclusive = cumulative - tau.double()
    first = torch.ones_like(ray_indices, dtype=torch.bool)
    first[1:] = ray_indices[1:] != ray_indices[:-1]
    position = torch.arange(ray_indices.shape[0], device=ray_indices.device)
    first_of_ray = torch.cummax(torch.where(first, position, torch.zeros_like(position)), dim=0).values
    transmittance = torch.exp(-(exclusive - exclusive[first_of_ray])).to(sigmas.dtype)
    return transmittance * (1.0 - torch.exp(-tau))


def render_weights(samples: Samples, sigmas: Tensor, n_rays: int) -> Tensor:
    """Volume-rendering weights ``(S,)`` of packed samples with densities ``sigmas (S,)``.

    ``w_i = T_i (1 - exp(-sigma_i delta_i))`` with ``T_i = exp(-sum_{j<i} sigma_j delta_j)`` along each ray: nerfacc's
    batched form on the sampler's grid of intervals for PyTorch samples; for nerfacc samples its packed form on CUDA
    (``packed_weights`` elsewhere).
    """
    layout = samples.layout
    if layout is None:
        if sigmas.device.type != "cuda":
            return packed_weights(samples.t_starts, samples.t_ends, sigmas, samples.ray_indices)
        weights, _, _ = nerfacc.render_weight_from_density(
            samples.t_starts, samples.t_ends, sigmas, ray_indices=samples.ray_indices, n_rays=n_rays
        )
        return weights
    grid_sigmas = torch.zeros(layout.mask.shape, dtype=sigmas.dtype, device=sigmas.device)
    grid_sigmas = grid_sigmas.masked_scatter(layout.mask, sigmas)
    weights, _, _ = nerfacc.render_weight_from_density(layout.t_starts, layout.t_ends, grid_sigmas)
    return weights[layout.mask]
