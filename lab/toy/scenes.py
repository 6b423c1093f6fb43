"""Coloured primitives as signed distance functions, rendered by sphere tracing in PyTorch.

These are the ground truth of the toy prior: its training images and the reference a finished toy run is scored
against. Objects sit at the origin of the project's world frame (z up, see ``framework.data.cameras``) inside a ball of
radius 0.5. Shading is Lambertian under a key light fixed in the world frame (it lights the front, +x, from above and
the right), a weaker fill light and an ambient term, so that front and back views differ for every shape. The ``mug``
has its handle on its right (+y) as seen from the front, so its front and back views are mirror images.

Written here rather than taken from a rasteriser library: the SDFs are a few lines each, this needs no GPU or OpenGL,
and the same function renders batches of cameras from ``framework.data.cameras.camera_batch``.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

COLOURS: Dict[str, Tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "green": (0.12, 0.70, 0.15),
    "blue": (0.10, 0.25, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "orange": (1.00, 0.50, 0.05),
    "purple": (0.55, 0.15, 0.75),
}
"""Albedo of each colour word (linear RGB in [0, 1])."""

BACKGROUND = (1.0, 1.0, 1.0)
"""The plain background of every render."""

KEY_LIGHT = (0.6, 0.35, 0.72)
"""Direction towards the key light (normalised on use): in front (+x), to the right (+y), above."""
FILL_LIGHT = (-0.5, -0.6, 0.3)
"""Direction towards the fill light: behind, to the left."""
AMBIENT, KEY, FILL = 0.35, 0.6, 0.2
"""Weights of the ambient term and the two lights."""

BOUND = 0.6
"""Radius of a ball holding every shape; rays are traced only inside it."""


def _box(p: Tensor, half: Tuple[float, float, float]) -> Tensor:
    q = p.abs() - torch.tensor(half, dtype=p.dtype, device=p.device)
    return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)


def _cylinder_z(p: Tensor, radius: float, half_height: float) -> Tensor:
    d = torch.stack([p[..., :2].norm(dim=-1) - radius, p[..., 2].abs() - half_height], dim=-1)
    return d.clamp(min=0).norm(dim=-1) + d.max(dim=-1).values.clamp(max=0)


def _torus(p2: Tensor, p_axis: Tensor, major: float, minor: float) -> Tensor:
    """Torus whose axis is the coordinate ``p_axis``; ``p2`` are the two in-plane coordinates (..., 2)."""
    return torch.stack([p2.norm(dim=-1) - major, p_axis], dim=-1).norm(dim=-1) - minor


def sphere(p: Tensor) -> Tensor:
    return p.norm(dim=-1) - 0.42


def cube(p: Tensor) -> Tensor:
    return _box(p, (0.3, 0.3, 0.3)) - 0.02


def cylinder(p: Tensor) -> Tensor:
    return _cylinder_z(p, 0.3, 0.38)


def cone(p: Tensor) -> Tensor:
    """Upright cone: base of radius 0.4 at z = -0.4, apex at z = 0.4 (exact SDF of a capped cone, apex radius 0)."""
    h, r1 = 0.4, 0.4
    q = torch.stack([p[..., :2].norm(dim=-1), p[..., 2]], dim=-1)
    k1 = torch.tensor([0.0, h], dtype=p.dtype, device=p.device)
    k2 = torch.tensor([-r1, 2.0 * h], dtype=p.dtype, device=p.device)
    ca = torch.stack([q[..., 0] - torch.minimum(q[..., 0], torch.where(q[..., 1] < 0, r1, 0.0)), q[..., 1].abs() - h], -1)
    t = (((k1 - q) * k2).sum(-1) / (k2 * k2).sum()).clamp(0.0, 1.0)
    cb = q - k1 + k2 * t[..., None]
    s = torch.where((cb[..., 0] < 0) & (ca[..., 1] < 0), -1.0, 1.0)
    return s * torch.minimum((ca * ca).sum(-1), (cb * cb).sum(-1)).sqrt()


def torus(p: Tensor) -> Tensor:
    """A ring standing upright and facing the front (its axis is x)."""
    return _torus(p[..., 1:], p[..., 0], 0.3, 0.12)


def mug(p: Tensor) -> Tensor:
    """An open-topped cup with a handle on its +y side."""
    body = _cylinder_z(p, 0.27, 0.3)
    inside = _cylinder_z(p - torch.tensor([0.0, 0.0, 0.06], dtype=p.dtype, device=p.device), 0.22, 0.3)
    cup = torch.maximum(body, -inside)
    # handle: half of a torus in the y-z plane (axis x) centred on the body's wall, outside the body
    c = p - torch.tensor([0.0, 0.27, 0.0], dtype=p.dtype, device=p.device)
    handle = _torus(c[..., 1:], c[..., 0], 0.16, 0.045)
    handle = torch.maximum(handle, -c[..., 1])
    return torch.minimum(cup, handle)


SHAPES: Dict[str, Callable[[Tensor], Tensor]] = {
    "sphere": sphere,
    "cube": cube,
    "cylinder": cylinder,
    "cone": cone,
    "torus": torus,
    "mug": mug,
}
"""Signed distance function of each shape word, (..., 3) -> (...)."""


def _normals(sdf: Callable[[Tensor], Tensor], p: Tensor, eps: float = 1e-3) -> Tensor:
    offsets = torch.eye(3, dtype=p.dtype, device=p.device) * eps
    grad = torch.stack([sdf(p + o) - sdf(p - o) for o in offsets], dim=-1)
    return F.normalize(grad, dim=-1)


@torch.no_grad()
def trace(shape: str, rays_o: Tensor, rays_d: Tensor, n_steps: int = 64) -> Tuple[Tensor, Tensor]:
    """Sphere-trace rays ``(..., 3)`` (unit directions) against ``shape``: hit mask ``(...)`` and hit points."""
    sdf = SHAPES[shape]
    # start where the ray enters the bounding ball (or at its closest point when it misses)
    b = (rays_o * rays_d).sum(-1)
    c = (rays_o * rays_o).sum(-1) - BOUND**2
    t = (-b - (b * b - c).clamp(min=0).sqrt()).clamp(min=0)
    t_far = -b + (b * b - c).clamp(min=0).sqrt()
    for _ in range(n_steps):
        d = sdf(rays_o + t[..., None] * rays_d)
        t = t + d * 0.9
    p = rays_o + t[..., None] * rays_d
    hit = (sdf(p).abs() < 2e-3) & (t < t_far) & (b * b - c > 0)
    return hit, p


def albedo_of(colour, batch_size: int, dtype=torch.float32, device=None) -> Tensor:
    """Albedo ``(B, 3)`` of a colour word, an RGB triple, or per-image RGB ``(B, 3)`` in [0, 1]."""
    if isinstance(colour, str):
        if colour not in COLOURS:
            raise KeyError(f"unknown toy colour {colour!r}; the colours are {', '.join(COLOURS)}")
        colour = COLOURS[colour]
    albedo = torch.as_tensor(colour, dtype=dtype, device=device)
    return albedo.expand(batch_size, 3) if albedo.dim() == 1 else albedo


@torch.no_grad()
def shade(shape: str, albedo: Tensor, hit: Tensor, points: Tensor, background: Tensor) -> Tensor:
    """RGB ``(B, ..., 3)`` of the traced pixels: Lambertian ``albedo`` ``(B, 3)`` under the fixed lights,
    ``background`` ``(B, 3)`` where missed."""
    expand = (slice(None),) + (None,) * (points.dim() - 2)
    n = _normals(SHAPES[shape], points)
    key = F.normalize(torch.tensor(KEY_LIGHT, dtype=points.dtype, device=points.device), dim=0)
    fill = F.normalize(torch.tensor(FILL_LIGHT, dtype=points.dtype, device=points.device), dim=0)
    light = AMBIENT + KEY * (n @ key).clamp(min=0) + FILL * (n @ fill).clamp(min=0)
    rgb = (albedo[expand] * light[..., None]).clamp(0.0, 1.0)
    return torch.where(hit[..., None], rgb, background[expand])


@torch.no_grad()
def render(shape: str, colour, batch: dict, supersample: int = 2, background=BACKGROUND) -> Tuple[Tensor, Tensor]:
    """Render ``shape`` for the cameras of a ``camera_batch`` built at ``supersample`` times the wanted resolution:
    RGB ``(B, H, W, 3)`` and coverage ``(B, H, W)`` in [0, 1], box-filtered down by ``supersample``.

    ``colour`` is a colour word of ``COLOURS``, an RGB albedo, or one albedo per camera ``(B, 3)`` (off-palette
    renders for the VAE); ``background`` likewise (default white).
    """
    if shape not in SHAPES:
        raise KeyError(f"unknown toy shape {shape!r}; the shapes are {', '.join(SHAPES)}")
    rays_o, rays_d = batch["rays_o"], F.normalize(batch["rays_d"], dim=-1)
    n = rays_o.shape[0]
    albedo = albedo_of(colour, n, rays_o.dtype, rays_o.device)
    bg = albedo_of(background, n, rays_o.dtype, rays_o.device)
    hit, points = trace(shape, rays_o, rays_d)
    rgb = shade(shape, albedo, hit, points, bg)
    mask = hit.to(rgb.dtype)
    if supersample > 1:
        rgb = F.avg_pool2d(rgb.permute(0, 3, 1, 2), supersample).permute(0, 2, 3, 1)
        mask = F.avg_pool2d(mask[:, None], supersample)[:, 0]
    return rgb, mask
