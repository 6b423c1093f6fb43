"""Baking a field into a texture of a UV-unwrapped mesh: rasterize in UV space, sample the field at the surface points.

Texel ``(row i, column j)`` of an ``S x S`` texture has its centre at ``(u, v) = ((j + 0.5) / S, (i + 0.5) / S)``: row 0
holds ``v`` near 0 (the top of the image in glTF's convention; OBJ's ``vt`` is written ``1 - v``).

1. The mesh is rasterized with ``v_tex`` as its screen positions (``rasterize`` of a ``RasterContext``): each texel
   centre inside a UV triangle gets that triangle's surface point (barycentrics applied to ``v_pos``).
2. Padding: a texel centre outside every triangle but within ``padding`` texels of one gets the closest point of the
   nearest triangle (clamped to its edges), and the field there. Thin triangles that hold no texel centre (slivers)
   and chart borders thus get their own colour, and bilinear filtering and mipmaps do not pull in foreign colours.
3. The field is evaluated at those points, in chunks.
4. Every texel still empty takes the colour of the nearest filled texel (a distance transform), so chart gaps do not
   bleed black into mipmaps.
"""

from __future__ import annotations

from typing import Callable, Tuple

import numpy as np
import torch
from torch import Tensor

from framework.geometry.mesh import Mesh
from framework.renderers.raster_context import RasterContext
from framework.renderers.rasterize_torch import MAX_CANDIDATES


@torch.no_grad()
def nearest_triangle_points(
    v_tex: Tensor, t_tex_idx: Tensor, size: int, padding: float, wanted: Tensor
) -> Tuple[Tensor, Tensor, Tensor]:
    """For texels ``wanted (S, S)`` (bool), the nearest UV triangle within ``padding`` texels and the closest point.

    Returns flat texel indices ``(N,)``, their faces ``(N,)`` and barycentrics ``(N, 3)`` of the closest points (on
    the triangle, so all in [0, 1]); texels farther than ``padding`` from every triangle are left out.
    """
    device = v_tex.device
    corners = v_tex[t_tex_idx].float() * size - 0.5  # (F, 3, 2) in texel-centre coordinates: texel j at x = j
    lo = torch.ceil(corners.amin(1) - padding).clamp(0, size - 1).long()
    hi = torch.floor(corners.amax(1) + padding).clamp(-1, size - 1).long()
    box = hi - lo + 1
    faces = torch.nonzero((box > 0).all(-1))[:, 0]
    best = torch.full((size * size,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=device)
    counts = box[faces].prod(-1)
    ends = torch.cumsum(counts, 0)
    wanted_flat = wanted.reshape(-1)
    start = 0
    while start < faces.numel():
        base = int(ends[start - 1]) if start > 0 else 0
        stop = max(int(torch.searchsorted(ends, torch.tensor([base + MAX_CANDIDATES], device=device), right=True)),
                   start + 1)
        sel = faces[start:stop]
        local = torch.repeat_interleave(torch.arange(sel.numel(), device=device), counts[start:stop])
        offset = torch.arange(local.numel(), device=device) - (ends[start:stop] - counts[start:stop] - base)[local]
        width = box[sel[local], 0]
        x = lo[sel[local], 0] + offset % width
        y = lo[sel[local], 1] + torch.div(offset, width, rounding_mode="floor")
        texel = y * size + x
        keep = wanted_flat[texel]
        local, texel = local[keep], texel[keep]
        p = torch.stack([x[keep], y[keep]], -1).float()
        distance, _, _ = _closest_on_triangle(p, corners[sel[local]])
        near = distance <= padding
        key = (distance[near].view(torch.int32).to(torch.int64) << 32) | sel[local[near]]
        best.scatter_reduce_(0, texel[near], key, reduce="amin")
        start = stop
    texels = torch.nonzero(best != torch.iinfo(torch.int64).max)[:, 0]
    face = best[texels] & 0xFFFFFFFF
    p = torch.stack([texels % size, torch.div(texels, size, rounding_mode="floor")], -1).float()
    _, edge, s = _closest_on_triangle(p, corners[face])
    bary = torch.zeros(texels.numel(), 3, device=device)
    rows = torch.arange(texels.numel(), device=device)
    bary[rows, (edge + 1) % 3] = 1.0 - s
    bary[rows, (edge + 2) % 3] = s
    return texels, face, bary


def _closest_on_triangle(p: Tensor, tri: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Distance from points ``p (N, 2)`` to the boundary of triangles ``tri (N, 3, 2)``, the nearest edge ``k`` (joining
    corners ``k + 1`` and ``k + 2``) and the position ``s`` in [0, 1] along it."""
    a = tri[:, [1, 2, 0]]
    b = tri[:, [2, 0, 1]]
    ab = b - a
    length2 = (ab * ab).sum(-1).clamp(min=1e-12)
    s = (((p[:, None, :] - a) * ab).sum(-1) / length2).clamp(0.0, 1.0)  # (N, 3)
    closest = a + s[..., None] * ab
    distance = (p[:, None, :] - closest).norm(dim=-1)
    d, edge = distance.min(-1)
    return d, edge, s.gather(1, edge[:, None])[:, 0]


@torch.no_grad()
def bake_texture(
    mesh: Mesh,
    field: Callable[[Tensor], Tensor],
    size: int,
    ctx: RasterContext,
    padding: float = 2.0,
    chunk_size: int = 65536,
) -> Tuple[np.ndarray, np.ndarray]:
    """A ``(size, size, C)`` float texture in [0, 1] of ``field(points (N, 3)) -> (N, C)`` over ``mesh``'s UVs.

    Also returns the ``(size, size)`` mask of texels that hold the field's own value (inside or near a chart); the
    others are filled from their nearest such texel. ``mesh`` needs ``v_tex`` and ``t_tex_idx``.
    """
    from scipy.ndimage import distance_transform_edt

    device = mesh.v_pos.device
    uv = mesh.v_tex.to(device)
    uv_clip = torch.cat([uv * 2.0 - 1.0, torch.zeros_like(uv[:, :1]), torch.ones_like(uv[:, :1])], -1)[None]
    rast = ctx.rasterize(uv_clip, mesh.t_tex_idx, (size, size))
    covered = rast[0, ..., 3] > 0
    inside = ctx.interpolate(mesh.v_pos, rast, mesh.t_pos_idx)[0][covered]
    texels = torch.nonzero(covered.reshape(-1))[:, 0]
    if padding > 0:
        pad_texels, pad_faces, bary = nearest_triangle_points(uv, mesh.t_tex_idx, size, padding, ~covered)
        pad_points = (mesh.v_pos[mesh.t_pos_idx[pad_faces]] * bary[..., None]).sum(1)
        texels = torch.cat([texels, pad_texels])
        inside = torch.cat([inside, pad_points])
    values = torch.cat([field(inside[i : i + chunk_size]) for i in range(0, inside.shape[0], chunk_size)])
    image = torch.zeros(size * size, values.shape[-1], device=device, dtype=values.dtype)
    image[texels] = values
    image = image.reshape(size, size, -1).clamp(0.0, 1.0).cpu().numpy()
    filled = np.zeros(size * size, dtype=bool)
    filled[texels.cpu().numpy()] = True
    filled = filled.reshape(size, size)
    if filled.any() and not filled.all():
        nearest = distance_transform_edt(~filled, return_distances=False, return_indices=True)
        image = image[nearest[0], nearest[1]]
    return image, filled
