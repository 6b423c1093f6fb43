"""Silhouette antialiasing in plain PyTorch, nvdiffrast's ``antialias`` operation: where coverage gets its gradient.

Rasterization is point-sampled, so moving a vertex changes which pixels a face covers only in jumps, and a mask or
colour loss gives the vertex no gradient from its silhouette. Antialiasing blends, across every silhouette edge, the
two pixels it passes between by how far along the segment joining their centres the edge crosses; the crossing
depends continuously on the vertices, and so does the image (Laine et al., "Modular primitives for high-performance
differentiable rendering", 2020, section 3.4).

For each pair of horizontally or vertically adjacent pixels that see different faces (or one sees none):

* the face in front is the one whose edge matters: the covered pixel's face against the background, the one with the
  smaller ``z/w`` between two faces;
* of that face's edges, the one where the segment between the pixel centres leaves the face is taken; it must be a
  silhouette edge (an edge of one face only, or one whose neighbouring face folds behind it as seen on screen: the
  neighbour's far vertex lies on the same side of the edge as this face's own) and more across the segment than along
  it (``|d along| <= |d across|``, so each edge is handled by one pair direction);
* with ``t`` in ``[0, 1]`` the crossing's position from the front face's pixel towards the other, the pixel on the far
  side of the crossing takes the share ``|0.5 - t|`` of the other pixel's colour: the front pixel is blended towards
  the other when the edge lies within its half (``t < 0.5``), the other pixel towards the front one otherwise.

Gradients flow to the colours (both pixels) and, through ``t``, to the clip-space positions ``pos``; which pairs and
edges take part is decided without gradient. Faces with a vertex at or behind the camera plane are not antialiased.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

CROSSING_TOLERANCE = 1.0 / 16.0
"""A crossing this far outside the segment between the pixel centres still counts (clamped), as in nvdiffrast."""


def edge_neighbours(tri: Tensor) -> Tensor:
    """For each face and edge ``k`` (opposite corner ``k``), the far vertex of the face across that edge; -1 if none.

    ``tri (F, 3)`` -> ``(F, 3)`` int64. Vertices shared by faces must share indices (as nvdiffrast's antialias
    requires); where more than two faces meet at an edge, faces are paired in index order.
    """
    tri = tri.long()
    n_faces = tri.shape[0]
    a = tri[:, [1, 2, 0]]
    b = tri[:, [2, 0, 1]]
    n_vertices = int(tri.max()) + 1 if n_faces else 1
    keys = (torch.minimum(a, b) * n_vertices + torch.maximum(a, b)).flatten()
    order = torch.argsort(keys, stable=True)
    sorted_keys = keys[order]
    result = torch.full((n_faces * 3,), -1, dtype=torch.long, device=tri.device)
    same = torch.nonzero(sorted_keys[1:] == sorted_keys[:-1])[:, 0]
    if same.numel():
        # pair each half-edge with the next of the same key, then each unpaired second with its predecessor
        first, second = order[same], order[same + 1]
        flat = tri.flatten()
        result[first] = flat[second]
        result[second] = torch.where(result[second] < 0, flat[first], result[second])
    return result.reshape(n_faces, 3)


@torch.no_grad()
def silhouette_edges(pos: Tensor, tri: Tensor, neighbours: Tensor) -> Tensor:
    """Which edges of each face are silhouettes in each view, ``(B, F, 3)`` bool (edge ``k`` opposite corner ``k``).

    An edge is a silhouette when it belongs to one face only, or when the face across it lies on the same side of it
    on screen as this face does (it folds behind or over it). Faces with a vertex (or a far vertex) at or behind the
    camera plane have none. Orientation on screen is taken in NDC (the pixel scale does not change its sign).
    """
    w = pos[..., 3]
    in_front = w > 0
    ndc = pos[..., :2] / torch.where(in_front, w, torch.ones_like(w))[..., None]  # (B, V, 2)
    corners = ndc[:, tri]  # (B, F, 3, 2)
    far = neighbours.clamp(min=0)
    has_far = neighbours >= 0

    def orientation(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
        return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (c[..., 0] - a[..., 0]) * (b[..., 1] - a[..., 1])

    own = orientation(corners[:, :, 0], corners[:, :, 1], corners[:, :, 2])  # (B, F)
    wings = []
    for k in range(3):
        k1, k2 = (k + 1) % 3, (k + 2) % 3
        other = torch.where(has_far[:, k, None], ndc[:, far[:, k]], corners[:, :, k])
        wings.append(orientation(other, corners[:, :, k1], corners[:, :, k2]))
    silhouette = (torch.stack(wings, -1) > 0) == (own > 0)[..., None]
    valid = in_front[:, tri].all(-1) & (in_front[:, far] | ~has_far).all(-1)
    return silhouette & valid[..., None]


def antialias(color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor, neighbours: Optional[Tensor] = None) -> Tensor:
    """nvdiffrast's ``antialias``: ``color (B, H, W, C)`` blended across silhouette edges, same shape.

    ``rast (B, H, W, 4)`` from the rasterizer, ``pos (B, V, 4)`` the clip-space vertices it rasterized (gradients
    reach them), ``tri (F, 3)``; ``neighbours`` is ``edge_neighbours(tri)``, computed here if not given (pass it when
    antialiasing several images of one mesh). The cost grows with the number of pixel pairs that meet a face with a
    silhouette edge; antialias several images of one render at once by concatenating their channels.
    """
    batch, height, width, channels = color.shape
    tri = tri.long()
    if neighbours is None:
        neighbours = edge_neighbours(tri)
    face = rast[..., 3].detach().round().long() - 1  # (B, H, W)
    depth = rast[..., 2].detach()
    silhouette = silhouette_edges(pos.detach(), tri, neighbours)  # (B, F, 3)
    has_silhouette = silhouette.any(-1)
    flat_color = color.reshape(-1, channels)
    delta_index, delta_value = [], []
    for vertical in (False, True):
        with torch.no_grad():
            f0, f1 = (face[:, :-1, :], face[:, 1:, :]) if vertical else (face[:, :, :-1], face[:, :, 1:])
            b, i, j = torch.nonzero(f0 != f1, as_tuple=True)
            i1, j1 = (i + 1, j) if vertical else (i, j + 1)
            fa, fb = face[b, i, j], face[b, i1, j1]
            use_a = (fa >= 0) & ((fb < 0) | (depth[b, i, j] < depth[b, i1, j1]))
            front = torch.where(use_a, fa, fb)
            # only pairs whose front face has a silhouette edge in this view can be blended
            keep = torch.nonzero(has_silhouette[b, front])[:, 0]
            b, i, j, i1, j1, use_a, front = (t[keep] for t in (b, i, j, i1, j1, use_a, front))
        if b.numel() == 0:
            continue
        ds = torch.where(use_a, 1.0, -1.0).to(pos.dtype)  # +1: the front face is at the first pixel
        # pixel centre of the front face's pixel, and the pixel coordinates of that face's corners relative to it
        ci = torch.where(use_a, i, i1).to(pos.dtype) + 0.5
        cj = torch.where(use_a, j, j1).to(pos.dtype) + 0.5
        v = pos[b[:, None], tri[front]]  # (N, 3, 4)
        w = v[..., 3]
        w_safe = torch.where(w > 0, w, torch.ones_like(w))
        px = (v[..., 0] / w_safe + 1.0) * (0.5 * width) - cj[:, None]
        py = (v[..., 1] / w_safe + 1.0) * (0.5 * height) - ci[:, None]
        # "along" is the pair's direction, "across" the other axis
        along, across = (py, px) if vertical else (px, py)
        crossings, usable = [], []
        for k in range(3):
            k1, k2 = (k + 1) % 3, (k + 2) % 3
            a0, a1 = along[:, k1], along[:, k2]
            c0, c1 = across[:, k1], across[:, k2]
            d_across = c1 - c0
            with torch.no_grad():
                straddles = (c0 > 0) != (c1 > 0)
                steep = (a1 - a0).abs() <= d_across.abs()
            safe = torch.where(straddles, d_across, torch.ones_like(d_across))
            t = ds * (a0 - c0 * (a1 - a0) / safe)  # where the edge meets the pair's line, towards the other pixel
            crossings.append(torch.where(straddles, t, torch.full_like(t, -torch.finfo(t.dtype).max)))
            usable.append(steep)
        crossings = torch.stack(crossings, -1)
        with torch.no_grad():
            usable = torch.stack(usable, -1) & silhouette[b, front]
            exit_edge = crossings.argmax(-1)
        t = crossings.gather(1, exit_edge[:, None])[:, 0]
        with torch.no_grad():
            keep = usable.gather(1, exit_edge[:, None])[:, 0]
            keep &= (t > -CROSSING_TOLERANCE) & (t < 1.0 + CROSSING_TOLERANCE)
        t = t[keep].clamp(0.0, 1.0)
        if t.numel() == 0:
            continue
        bk, ik, jk, i1k, j1k, dsk = b[keep], i[keep], j[keep], i1[keep], j1[keep], ds[keep]
        alpha = dsk * (0.5 - t)  # > 0: the first pixel changes, < 0: the second
        first = (bk * height + ik) * width + jk
        second = (bk * height + i1k) * width + j1k
        target = torch.where(alpha > 0, first, second)
        difference = flat_color[second] - flat_color[first]
        delta_index.append(target)
        delta_value.append(alpha[:, None].to(color.dtype) * difference)
    if not delta_index:
        return color
    out = flat_color.index_add(0, torch.cat(delta_index), torch.cat(delta_value))
    return out.reshape(batch, height, width, channels)
