"""Tetrahedral grids and differentiable marching tetrahedra (DMTet, Shen et al. 2021), in PyTorch.

**The grid.** A cube of ``n`` cells per axis, its ``(n + 1)^3`` vertices spanning ``[0, 1]^3``, each cell split into
the six tetrahedra of Kuhn's (Freudenthal's) triangulation: the tetrahedra around the cell's main diagonal, one for
each order in which a path from corner ``000`` to corner ``111`` can step along x, y and z. Neighbouring cells share
their faces' triangulations, so the grid is conforming and a surface marched through it is closed. Every tetrahedron
is stored positively oriented (``det[v1 - v0, v2 - v0, v3 - v0] > 0``), which is what lets one triangle table give
every face the same (outward) winding.

``isosurface_resolution`` means what it means in threestudio, whose grids (``load/tets/<res>_tets.npz``, made by
Quartet with spacing ``1 / res``) have tetrahedra about ``2 / res`` of the box wide: its 128 grid holds 277k vertices
and 1.53M tetrahedra. ``tet_grid(res)`` therefore has ``ceil(res / 2)`` cells per axis: 128 gives 274,625 vertices and
1,572,864 tetrahedra. Grids are built in well under a second and cached in memory, so no files are downloaded or
written; indices are int32 (half the memory of int64; a 256 grid has 12.6M tetrahedra).

**Marching.** With a signed distance ``s`` per vertex (negative inside), a tetrahedron whose corners disagree in sign
holds one triangle (one corner apart from the other three) or two (two and two). Each surface vertex lies on a grid
edge ``(a, b)`` whose ends disagree, at the zero of the linear interpolation,
``p = x_a + s_a / (s_a - s_b) (x_b - x_a)``: differentiable in the SDF values and in the (deformed) vertex positions,
which is how image losses reach them. Vertices are shared between the tetrahedra of an edge, so the mesh is
watertight, and faces wind counter-clockwise seen from outside (normals point from negative to positive SDF).

Zero-area faces: a vertex whose SDF is exactly 0 counts as outside, and the surface vertices on all its crossing
edges then coincide with it, making faces of zero area. They are kept (removing them would open the mesh); whatever
normalises face normals (vertex normals, normal consistency) must guard against zero length.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Tuple

import torch
from torch import Tensor

TET_EDGES: Tuple[Tuple[int, int], ...] = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
"""The six edges of a tetrahedron as pairs of its corner numbers; an edge's number is its place here."""


def cells_for_resolution(resolution: int) -> int:
    """Cells per axis of the grid threestudio calls ``resolution`` (its tetrahedra are about 2 / resolution wide)."""
    return max(1, math.ceil(resolution / 2))


@functools.lru_cache(maxsize=4)
def cube_tet_grid(cells: int) -> Tuple[Tensor, Tensor]:
    """The Kuhn tetrahedralisation of ``cells^3`` cubes spanning ``[0, 1]^3``.

    Returns vertices ``((cells + 1)^3, 3)`` float32 and tetrahedra ``(6 cells^3, 4)`` int32, all positively oriented.
    Cached: call sites share the same (read-only) tensors.

    >>> v, t = cube_tet_grid(1)
    >>> v.shape, t.shape
    (torch.Size([8, 3]), torch.Size([6, 4]))
    """
    if cells < 1:
        raise ValueError(f"a tetrahedral grid needs at least one cell per axis, got {cells}")
    n1 = cells + 1
    axis = torch.arange(n1, dtype=torch.float32) / cells
    vertices = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    index_dtype = torch.int32 if n1**3 < 2**31 else torch.int64
    stride = torch.tensor([n1 * n1, n1, 1], dtype=index_dtype)

    # corner offsets of the six tetrahedra of one cell: 000 -> one axis -> two axes -> 111
    offsets = []
    for order in itertools.permutations(range(3)):
        corner = [0, 0, 0]
        path = [list(corner)]
        for axis_id in order:
            corner[axis_id] = 1
            path.append(list(corner))
        if _permutation_sign(order) < 0:  # odd orders give negatively oriented tetrahedra: swap two corners
            path[1], path[2] = path[2], path[1]
        offsets.append(path)
    corner_offsets = (torch.tensor(offsets, dtype=index_dtype) * stride).sum(-1, dtype=index_dtype)  # (6, 4)

    idx = torch.arange(cells, dtype=index_dtype)
    base = (idx[:, None, None] * stride[0] + idx[None, :, None] * stride[1] + idx[None, None, :]).reshape(-1)
    tets = (base[:, None, None] + corner_offsets[None]).reshape(-1, 4)  # cells^3 x 6 tetrahedra
    return vertices, tets


def tet_grid(resolution: int) -> Tuple[Tensor, Tensor]:
    """The grid of threestudio's ``isosurface_resolution`` (see the module docstring): vertices and tetrahedra."""
    return cube_tet_grid(cells_for_resolution(resolution))


def _permutation_sign(order: Tuple[int, ...]) -> int:
    sign = 1
    order = list(order)
    for i in range(len(order)):
        for j in range(i + 1, len(order)):
            if order[i] > order[j]:
                sign = -sign
    return sign


def _triangle_table() -> Tuple[Tensor, Tensor]:
    """For each of the 16 inside/outside patterns of a tetrahedron's corners (bit k: corner k inside), the triangles
    as triples of edge numbers, wound counter-clockwise seen from outside, and how many there are (0, 1 or 2).

    Derived rather than typed in: the triangles are found from which corners are inside, and each is oriented on a
    reference (positively oriented) tetrahedron so that its normal points from the inside corners to the outside ones.
    """
    ref = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)

    def edge(a: int, b: int) -> int:
        return TET_EDGES.index((min(a, b), max(a, b)))

    def midpoint(e: int) -> Tensor:
        a, b = TET_EDGES[e]
        return (ref[a] + ref[b]) / 2.0

    table = torch.zeros(16, 2, 3, dtype=torch.int64)
    counts = torch.zeros(16, dtype=torch.int64)
    for code in range(16):
        inside = [k for k in range(4) if code >> k & 1]
        outside = [k for k in range(4) if not code >> k & 1]
        if len(inside) in (0, 4):
            continue
        if len(inside) in (1, 3):
            lone = inside[0] if len(inside) == 1 else outside[0]
            triangles = [[edge(lone, k) for k in range(4) if k != lone]]
        else:
            (a, b), (c, d) = inside, outside
            ring = [edge(a, c), edge(a, d), edge(b, d), edge(b, c)]  # consecutive edges share a corner
            triangles = [[ring[0], ring[1], ring[2]], [ring[0], ring[2], ring[3]]]
        towards_outside = ref[outside].mean(0) - ref[inside].mean(0)
        for i, tri in enumerate(triangles):
            p0, p1, p2 = (midpoint(e) for e in tri)
            if torch.dot(torch.linalg.cross(p1 - p0, p2 - p0), towards_outside) < 0:
                tri = [tri[0], tri[2], tri[1]]
            table[code, i] = torch.tensor(tri)
        counts[code] = len(triangles)
    return table, counts


TRIANGLE_TABLE, TRIANGLE_COUNT = _triangle_table()


def marching_tetrahedra(positions: Tensor, sdf: Tensor, tets: Tensor) -> Tuple[Tensor, Tensor]:
    """The surface ``sdf = 0`` of a tetrahedral grid: vertices ``(M, 3)`` and faces ``(F, 3)`` (int64).

    ``positions (V, 3)`` are the grid's (possibly deformed) vertices, ``sdf (V,)`` or ``(V, 1)`` their signed
    distances (negative inside), ``tets (T, 4)`` positively oriented tetrahedra. Gradients flow from the returned
    vertices to ``positions`` and ``sdf``; the topology (which tetrahedra and edges are cut) is piecewise constant.
    With no sign change the mesh is empty (``(0, 3)`` vertices and faces).
    """
    sdf = sdf.reshape(-1)
    n_vertices = positions.shape[0]
    device = positions.device
    with torch.no_grad():
        inside = sdf < 0
        corner_inside = inside[tets.reshape(-1)].reshape(-1, 4)
        code = (corner_inside.to(torch.int64) << torch.arange(4, device=device)).sum(-1)
        cut = (code > 0) & (code < 15)
        cut_tets = tets[cut].to(torch.int64)  # (Tc, 4)
        code = code[cut]
        ends_a = cut_tets[:, [a for a, _ in TET_EDGES]]
        ends_b = cut_tets[:, [b for _, b in TET_EDGES]]
        lo, hi = torch.minimum(ends_a, ends_b), torch.maximum(ends_a, ends_b)
        edge_keys, edge_of_slot = torch.unique((lo * n_vertices + hi).reshape(-1), return_inverse=True)
        edge_lo, edge_hi = edge_keys // n_vertices, edge_keys % n_vertices
        crossing = inside[edge_lo] != inside[edge_hi]
        vertex_of_edge = torch.cumsum(crossing.to(torch.int64), 0) - 1
        vertex_of_slot = vertex_of_edge[edge_of_slot].reshape(-1, 6)  # surface vertex on each of a tet's edges

        table = TRIANGLE_TABLE.to(device)[code]  # (Tc, 2, 3)
        two = TRIANGLE_COUNT.to(device)[code] == 2
        faces = torch.cat(
            [
                torch.gather(vertex_of_slot, 1, table[:, 0]),
                torch.gather(vertex_of_slot[two], 1, table[two, 1]),
            ]
        )
        a, b = edge_lo[crossing], edge_hi[crossing]
    s_a, s_b = sdf[a][:, None], sdf[b][:, None]
    t = s_a / (s_a - s_b)  # the signs differ, so the denominator is not zero
    vertices = positions[a] + t * (positions[b] - positions[a])
    return vertices, faces
