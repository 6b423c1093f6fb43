"""Reference meshes with closed-form renders, a mesh geometry to render them, and the rasterizer back-end comparison.

* ``box_mesh``: an axis-aligned box with its own 4 vertices per side, so interpolated normals are the side's normal;
  ``ray_box`` gives each ray's entry distance and the normal of the side it enters.
* ``sphere_mesh``: an icosphere inscribed in a sphere; ``ray_sphere`` gives the sphere's hit distance and normal.
* ``MeshGeometry``: the geometry interface (``isosurface``, ``forward``, ``export``) around a fixed ``Mesh``, with
  features that vary over space (``colour_field``), so renders and exported textures can be checked point by point.
* ``backend_report(device)``: the same scenes rendered by the PyTorch rasterizer on the CPU, by it on ``device`` and
  by nvdiffrast (when it imports on CUDA): coverage mismatches, differences where both cover, milliseconds per render;
  ``scripts/gpu_check.py`` prints it.
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from framework.geometry.mesh import Mesh


def box_mesh(half: Sequence[float] = (0.4, 0.3, 0.25), center: Sequence[float] = (0.0, 0.0, 0.0)) -> Mesh:
    """An axis-aligned box of half-sizes ``half``: 6 sides x 4 own vertices, 12 faces wound outward."""
    h = torch.tensor(half, dtype=torch.float32)
    c = torch.tensor(center, dtype=torch.float32)
    vertices, faces = [], []
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3
        for sign in (-1.0, 1.0):
            corners = []
            for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                p = torch.zeros(3)
                p[axis], p[u], p[v] = sign, a, b
                corners.append(c + p * h)
            base = len(vertices)
            vertices += corners
            # (u, v, axis) is right-handed, so u-then-v corners wind outward on the + side
            quad = [[0, 1, 2], [0, 2, 3]] if sign > 0 else [[0, 2, 1], [0, 3, 2]]
            faces += [[base + i for i in f] for f in quad]
    return Mesh(torch.stack(vertices), torch.tensor(faces))


def sphere_mesh(radius: float = 0.5, subdivisions: int = 3, center: Sequence[float] = (0.0, 0.0, 0.0)) -> Mesh:
    """An icosphere with its vertices on the sphere (``20 * 4^subdivisions`` faces)."""
    import trimesh

    ico = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    v = torch.tensor(ico.vertices, dtype=torch.float32) + torch.tensor(center, dtype=torch.float32)
    return Mesh(v, torch.tensor(ico.faces, dtype=torch.long))


def ray_box(rays_o: Tensor, rays_d: Tensor, half: Sequence[float], center: Sequence[float] = (0, 0, 0)):
    """Entry distance ``(...,)`` (inf where missed) and outward normal of the side entered ``(..., 3)`` (slabs)."""
    h = torch.tensor(half, dtype=rays_o.dtype)
    c = torch.tensor(center, dtype=rays_o.dtype)
    o = rays_o - c
    safe = torch.where(rays_d.abs() < 1e-12, torch.full_like(rays_d, 1e-12), rays_d)
    t1, t2 = (-h - o) / safe, (h - o) / safe
    near, far = torch.minimum(t1, t2), torch.maximum(t1, t2)
    t_in, axis = near.max(dim=-1)
    t_out = far.min(dim=-1).values
    hit = (t_in < t_out) & (t_out > 0)
    normal = torch.zeros_like(rays_o).scatter(-1, axis[..., None], 1.0)
    normal = normal * -torch.sign(rays_d.gather(-1, axis[..., None]))
    return torch.where(hit, t_in, torch.full_like(t_in, math.inf)), normal


def ray_sphere(rays_o: Tensor, rays_d: Tensor, radius: float, center: Sequence[float] = (0, 0, 0)):
    """First hit distance ``(...,)`` (inf where missed) and outward unit normal there ``(..., 3)`` for unit rays."""
    c = torch.tensor(center, dtype=rays_o.dtype)
    oc = rays_o - c
    b = (oc * rays_d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - radius**2)
    t = -b - torch.sqrt(disc.clamp(min=0.0))
    t = torch.where(disc > 0, t, torch.full_like(t, math.inf))
    normal = (oc + torch.where(torch.isfinite(t), t, torch.zeros_like(t))[..., None] * rays_d) / radius
    return t, normal


def colour_field(points: Tensor) -> Tensor:
    """A smooth colour in (0, 1) that varies over space, ``(..., 3)`` (what ``MeshGeometry``'s features encode)."""
    return 0.5 + 0.4 * torch.sin(torch.stack([3.0 * points[..., 0] + 1.0, 4.0 * points[..., 1] - 0.5,
                                              5.0 * points[..., 2] + 2.0], dim=-1))


class MeshGeometry(nn.Module):
    """A geometry of one fixed mesh (``isosurface`` returns it) with features ``logit(colour_field(p))``.

    With ``no-material`` (sigmoid) the rendered colour at a surface point ``p`` is ``colour_field(p)``. ``v_pos`` is
    a parameter when ``trainable``, so renders can be differentiated with respect to the vertices.
    """

    has_normal = False

    def __init__(self, mesh: Mesh, trainable: bool = False):
        super().__init__()
        if trainable:
            self.v_pos = nn.Parameter(mesh.v_pos.clone())
        else:
            self.register_buffer("v_pos", mesh.v_pos.clone())
        self.register_buffer("t_pos_idx", mesh.t_pos_idx.clone())

    def isosurface(self) -> Mesh:
        return Mesh(self.v_pos, self.t_pos_idx)

    def forward(self, points: Tensor, output_normal: bool = False) -> Dict[str, Tensor]:
        return {"features": torch.logit(colour_field(points))}

    def export(self, points: Tensor, **kwargs: Any) -> Dict[str, Tensor]:
        return {"features": torch.logit(colour_field(points))}


def _timed(fn: Any, device: torch.device, repeats: int = 3) -> Tuple[Any, float]:
    result = fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, (time.perf_counter() - start) / repeats * 1000.0


def _render(backend: str, mesh: Mesh, batch: Dict[str, Any], device: torch.device) -> Tuple[Dict[str, Tensor], float]:
    import framework.backgrounds  # noqa: F401
    import framework.materials  # noqa: F401
    from framework import registry
    from framework.renderers.nvdiff_rasterizer import NVDiffRasterizer

    geometry = MeshGeometry(mesh).to(device)
    material = registry.find("material", "no-material")({}).to(device)
    background = registry.find("background", "solid-color-background")({"color": [0.0, 0.0, 0.0]}).to(device)
    context = "cuda" if backend == "nvdiffrast" else "gl"
    renderer = NVDiffRasterizer({"backend": backend, "context_type": context}, geometry=geometry, material=material,
                                background=background).to(device)
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    with torch.no_grad():
        out, ms = _timed(lambda: renderer(**batch), device)
    return {k: v.float().cpu() for k, v in out.items() if torch.is_tensor(v)}, ms


def compare_renders(a: Dict[str, Tensor], b: Dict[str, Tensor]) -> Dict[str, float]:
    """Coverage mismatch fraction, and max differences of depth, normal and colour where both cover a pixel
    (antialiased outputs compared away from silhouettes: where both opacities are 1)."""
    cover_a, cover_b = a["opacity"][..., 0] > 0.5, b["opacity"][..., 0] > 0.5
    both = (a["opacity"][..., 0] >= 1.0 - 1e-6) & (b["opacity"][..., 0] >= 1.0 - 1e-6)
    report = {"coverage_mismatch_fraction": float((cover_a != cover_b).float().mean())}
    for key in ("depth", "comp_normal", "comp_rgb", "opacity"):
        diff = (a[key] - b[key]).abs()
        report[f"{key}_max_abs_diff"] = float(diff[both].max()) if both.any() else 0.0
    report["opacity_mean_abs_diff"] = float((a["opacity"] - b["opacity"]).abs().mean())
    return report


def backend_report(device: str = "cuda", resolution: int = 128, subdivisions: int = 5) -> Dict[str, Dict[str, float]]:
    """The PyTorch rasterizer on the CPU against itself on ``device`` and against nvdiffrast (if it imports there).

    Scenes: a box (12 faces) and an icosphere (``20 * 4^subdivisions`` faces) seen from one orbit camera at
    ``resolution`` squared. Rows: ``<scene>: <a> vs <b>`` with ``compare_renders``' figures and each back end's ms.
    """
    from framework.data.cameras import camera_batch
    from framework.renderers.raster_context import nvdiffrast_importable

    dev = torch.device(device)
    batch = camera_batch(torch.tensor([20.0]), torch.tensor([35.0]), torch.tensor([2.0]), torch.tensor([45.0]),
                         resolution, resolution)
    batch["light_positions"] = batch["camera_positions"].clone()
    scenes = {"box": box_mesh(), "sphere": sphere_mesh(0.5, subdivisions)}
    report: Dict[str, Dict[str, float]] = {}
    for name, mesh in scenes.items():
        ref, ref_ms = _render("torch", mesh, batch, torch.device("cpu"))
        others = [("torch", dev)]
        if dev.type == "cuda" and nvdiffrast_importable():
            others.append(("nvdiffrast", dev))
        for backend, where in others:
            out, ms = _render(backend, mesh, batch, where)
            row = compare_renders(ref, out)
            row["ms_reference_torch_cpu"] = ref_ms
            row[f"ms_{backend}_{where.type}"] = ms
            row["faces"] = float(mesh.n_faces)
            report[f"{name}: torch-cpu vs {backend}-{where.type}"] = row
    return report


def format_report(report: Dict[str, Dict[str, float]], digits: Optional[int] = 4) -> str:
    """``backend_report`` as plain text, one line per comparison."""
    lines = []
    for name, row in report.items():
        lines.append(name + ": " + ", ".join(f"{k}={v:.{digits}g}" for k, v in row.items()))
    return "\n".join(lines)


def gpu_check_rows(device: str, dry_run: bool) -> List[Tuple[str, str, str]]:
    """``scripts/gpu_check.py``'s rasterizer section: ``backend_report`` rows ``(section, check, value)``.

    On ``device`` (CUDA): the PyTorch rasterizer on CUDA and nvdiffrast (when installed) against the CPU at 256x256
    on an 80k-face sphere and a box, with milliseconds per render. ``dry_run``: the same on the CPU at 32x32.
    """
    from framework.renderers.raster_context import nvdiffrast_importable

    size, subdivisions = (32, 3) if dry_run else (256, 6)
    rows = [("rasterizer", "nvdiffrast importable", str(nvdiffrast_importable()))]
    for name, row in backend_report(device, resolution=size, subdivisions=subdivisions).items():
        for key, value in row.items():
            rows.append(("rasterizer", f"{name}: {key}", f"{value:.4g}"))
    return rows
