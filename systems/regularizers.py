"""Regularisers written once for every 3D system (threestudio's definitions), grouped by training stage.

Each takes the renderer's output dict. Radiance fields (stage ``coarse``): ``opacity`` (B, H, W, 1); ``weights`` and
``normal`` per sample. Meshes (stage ``geometry``): ``mesh``, the rasterized ``Mesh`` (``v_pos (V, 3)``,
``t_pos_idx (F, 3)``).
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def sparsity(out: Dict[str, Tensor]) -> Tensor:
    """Penalise accumulated opacity: mean of sqrt(opacity^2 + 0.01) (a smooth L1)."""
    return (out["opacity"] ** 2 + 0.01).sqrt().mean()


def opaque(out: Dict[str, Tensor]) -> Tensor:
    """Push opacity to 0 or 1: the binary entropy of the clamped opacity."""
    o = out["opacity"].clamp(1.0e-3, 1.0 - 1.0e-3)
    return F.binary_cross_entropy(o, o)


def z_variance(out: Dict[str, Tensor]) -> Tensor:
    """Variance of depth along rays that are mostly opaque: encourages thin surfaces."""
    mask = out["opacity"] > 0.5
    if not mask.any():
        return out["z_variance"].sum() * 0.0
    return out["z_variance"][mask].mean()


def orient(out: Dict[str, Tensor]) -> Tensor:
    """Penalise normals facing away from the camera (DreamFusion's orientation loss).

    Needs per-sample ``normal``, ``weights`` and ``t_dirs`` (ray directions of the samples), which the renderer returns
    when the geometry computes normals.
    """
    if "normal" not in out:
        raise ValueError(
            "the orient loss needs normals: set system.geometry.normal_type (e.g. analytic) or lambda_orient=0"
        )
    dot = (out["normal"] * out["t_dirs"]).sum(-1, keepdim=True)
    return (out["weights"].detach() * dot.clamp_min(0.0) ** 2).sum() / (out["opacity"] > 0).sum().clamp_min(1)


def vertex_normals(v_pos: Tensor, t_pos_idx: Tensor) -> Tensor:
    """Unit vertex normals ``(V, 3)``: the sum of the incident faces' area-weighted normals; a vertex whose faces all
    have zero area (marching through exact zeros makes such faces) gets +z instead of a NaN."""
    tri = v_pos[t_pos_idx]
    face_normals = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    summed = torch.zeros_like(v_pos).index_add(0, t_pos_idx.reshape(-1), face_normals.repeat_interleave(3, dim=0))
    fallback = torch.tensor([0.0, 0.0, 1.0], dtype=v_pos.dtype, device=v_pos.device)
    summed = torch.where((summed * summed).sum(-1, keepdim=True) > 1e-20, summed, fallback)
    return F.normalize(summed, dim=-1)


def mesh_edges(t_pos_idx: Tensor) -> Tensor:
    """The undirected edges ``(E, 2)`` of a triangle mesh, each once (smaller index first)."""
    edges = torch.cat([t_pos_idx[:, [0, 1]], t_pos_idx[:, [1, 2]], t_pos_idx[:, [2, 0]]]).sort(dim=1).values
    return torch.unique(edges, dim=0)


def normal_consistency(out: Dict[str, Tensor]) -> Tensor:
    """Mean over mesh edges of ``1 - cos`` between the vertex normals at the edge's ends (0 on a plane)."""
    mesh = out["mesh"]
    normals = vertex_normals(mesh.v_pos, mesh.t_pos_idx)
    edges = mesh_edges(mesh.t_pos_idx)
    return (1.0 - F.cosine_similarity(normals[edges[:, 0]], normals[edges[:, 1]], dim=-1)).mean()


def laplacian_smoothness(out: Dict[str, Tensor]) -> Tensor:
    """Mean over vertices of ``|deg(i) v_i - sum_{j ~ i} v_j|``: the uniform (graph) Laplacian of the positions."""
    mesh = out["mesh"]
    v_pos = mesh.v_pos
    with torch.no_grad():
        edges = mesh_edges(mesh.t_pos_idx)
        src = torch.cat([edges[:, 0], edges[:, 1]])
        dst = torch.cat([edges[:, 1], edges[:, 0]])
        degree = torch.zeros(v_pos.shape[0], dtype=v_pos.dtype, device=v_pos.device).index_add(
            0, src, torch.ones_like(src, dtype=v_pos.dtype)
        )
    neighbours = torch.zeros_like(v_pos).index_add(0, src, v_pos[dst])
    return (degree[:, None] * v_pos - neighbours).norm(dim=-1).mean()


REGULARIZERS: Dict[str, Callable[[Dict[str, Tensor]], Tensor]] = {
    "sparsity": sparsity,
    "opaque": opaque,
    "z_variance": z_variance,
    "orient": orient,
    "normal_consistency": normal_consistency,
    "laplacian_smoothness": laplacian_smoothness,
}
"""Every regulariser, by loss name (``loss_<name>`` weighted by ``lambda_<name>``)."""

STAGE_REGULARIZERS: Dict[str, Tuple[str, ...]] = {
    "coarse": ("sparsity", "opaque", "z_variance", "orient"),
    "geometry": ("normal_consistency", "laplacian_smoothness"),
    "texture": (),
}
"""The regularisers each training stage computes (those of radiance fields, of meshes, none)."""
