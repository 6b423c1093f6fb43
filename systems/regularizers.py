"""Regularisers written once for every 3D system (threestudio's definitions), grouped by training stage.

Each takes the renderer's output dict. Radiance fields (stage ``coarse``): ``opacity`` (B, H, W, 1); ``weights`` and
``normal`` per sample. Meshes (stage ``geometry``): ``mesh``, the rasterized ``framework.geometry.mesh.Mesh``, whose
methods hold threestudio's mesh regularisers.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

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

    Needs per-sample ``normal``, ``weights`` and ``t_dirs`` (ray directions of the samples), which a volume renderer
    returns once asked for normals (``TextTo3DSystem`` asks when ``lambda_orient`` is on).
    """
    if "normal" not in out:
        raise ValueError("the orient loss needs per-sample normals: call renderer.request_normals() first")
    dot = (out["normal"] * out["t_dirs"]).sum(-1, keepdim=True)
    return (out["weights"].detach() * dot.clamp_min(0.0) ** 2).sum() / (out["opacity"] > 0).sum().clamp_min(1)


def normal_consistency(out: Dict[str, Any]) -> Tensor:
    """Mean over mesh edges of ``1 - cos`` between the vertex normals at the edge's ends (0 on a plane)."""
    return out["mesh"].normal_consistency()


def laplacian_smoothness(out: Dict[str, Any]) -> Tensor:
    """Mean over vertices of ``|sum_{j ~ i} (v_i - v_j)|``: the uniform Laplacian of the mesh's positions."""
    return out["mesh"].laplacian()


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
