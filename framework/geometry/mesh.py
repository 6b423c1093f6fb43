"""``Mesh``: a triangle mesh as the rasterizer, the regularisers and the exporter use it (threestudio's fields).

* ``v_pos (V, 3)`` vertex positions (may carry gradient: a DMTet surface is differentiable in them), ``t_pos_idx
  (F, 3)`` faces, counter-clockwise seen from outside (so face normals point outward);
* ``v_nrm (V, 3)`` unit vertex normals, computed on first use from ``v_pos``: the sum of the adjacent faces'
  ``(v1 - v0) x (v2 - v0)`` (twice their area times their unit normal, so each face counts with its area), normalised.
  Zero-area faces (an SDF exactly zero at a grid vertex makes them) add nothing; a vertex whose sum is shorter than
  ``NORMAL_EPS`` gets ``+z`` instead, so normalisation never divides by zero and gradients stay finite;
* ``v_tex (T, 2)`` UVs in ``[0, 1]`` and ``t_tex_idx (F, 3)`` their faces, from ``unwrap_uv`` (xatlas) or given; the
  ``f``-th face of both index arrays is the same triangle. ``v = 0`` is the top row of a texture image (glTF's
  convention, and the row order of a texture baked by rasterizing in UV space); OBJ files store ``1 - v``;
* ``v_rgb (V, 3)`` optional vertex colours in ``[0, 1]``;
* ``extras``: anything a geometry wants to pass along with its surface.

Regularisers of ProlificDreamer's geometry stage (threestudio's definitions): ``normal_consistency()`` (mean over
edges of ``1 - cos`` between the vertex normals at its ends) and ``laplacian()`` (mean norm of the uniform Laplacian
``sum_j (v_i - v_j)`` over neighbours).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from framework.errors import ConfigError, UserError

NORMAL_EPS = 1e-20
"""Squared length below which a summed vertex normal is replaced by ``+z`` (only vertices of zero-area faces)."""


class Mesh:
    """A triangle mesh ``v_pos (V, 3)``, ``t_pos_idx (F, 3)`` with lazily computed normals and optional UVs/colours."""

    def __init__(
        self,
        v_pos: Tensor,
        t_pos_idx: Tensor,
        v_tex: Optional[Tensor] = None,
        t_tex_idx: Optional[Tensor] = None,
        v_rgb: Optional[Tensor] = None,
        **extras: Any,
    ) -> None:
        if v_pos.dim() != 2 or v_pos.shape[-1] != 3:
            raise ValueError(f"Mesh: v_pos must be (V, 3), got {tuple(v_pos.shape)}")
        if t_pos_idx.dim() != 2 or t_pos_idx.shape[-1] != 3:
            raise ValueError(f"Mesh: t_pos_idx must be (F, 3), got {tuple(t_pos_idx.shape)}")
        self.v_pos = v_pos
        self.t_pos_idx = t_pos_idx.long()
        self._v_nrm: Optional[Tensor] = None
        self._edges: Optional[Tensor] = None
        self.v_tex = v_tex
        self.t_tex_idx = None if t_tex_idx is None else t_tex_idx.long()
        self.v_rgb: Optional[Tensor] = None
        if v_rgb is not None:
            self.set_vertex_color(v_rgb)
        self.extras: Dict[str, Any] = dict(extras)

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def n_vertices(self) -> int:
        return int(self.v_pos.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.t_pos_idx.shape[0])

    @property
    def requires_grad(self) -> bool:
        return bool(self.v_pos.requires_grad)

    @property
    def has_uv(self) -> bool:
        return self.v_tex is not None and self.t_tex_idx is not None

    def face_vertices(self) -> Tensor:
        """The corners of every face, ``(F, 3, 3)`` (face, corner, xyz)."""
        return self.v_pos[self.t_pos_idx]

    def face_normals_scaled(self) -> Tensor:
        """``(v1 - v0) x (v2 - v0)`` per face ``(F, 3)``: outward, with length twice the face's area."""
        v = self.face_vertices()
        return torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)

    def face_areas(self) -> Tensor:
        """Face areas ``(F,)``."""
        return 0.5 * self.face_normals_scaled().norm(dim=-1)

    @property
    def v_nrm(self) -> Tensor:
        """Unit vertex normals ``(V, 3)``, area-weighted (see the module docstring); cached."""
        if self._v_nrm is None:
            self._v_nrm = self._vertex_normals()
        return self._v_nrm

    def _vertex_normals(self) -> Tensor:
        scaled = self.face_normals_scaled()
        summed = torch.zeros_like(self.v_pos)
        for corner in range(3):
            summed = summed.index_add(0, self.t_pos_idx[:, corner], scaled)
        long_enough = (summed * summed).sum(dim=-1, keepdim=True) > NORMAL_EPS
        up = torch.tensor([0.0, 0.0, 1.0], dtype=summed.dtype, device=summed.device)
        return F.normalize(torch.where(long_enough, summed, up), dim=-1)

    @property
    def edges(self) -> Tensor:
        """Unique undirected edges ``(E, 2)``, each as (smaller, larger) vertex index; cached."""
        if self._edges is None:
            pairs = torch.cat([self.t_pos_idx[:, [0, 1]], self.t_pos_idx[:, [1, 2]], self.t_pos_idx[:, [2, 0]]])
            self._edges = torch.unique(pairs.sort(dim=1).values, dim=0)
        return self._edges

    def set_vertex_color(self, v_rgb: Tensor) -> None:
        """Vertex colours ``(V, 3)`` in [0, 1]."""
        if v_rgb.shape != (self.n_vertices, 3):
            raise ValueError(f"Mesh: v_rgb must be ({self.n_vertices}, 3), got {tuple(v_rgb.shape)}")
        self.v_rgb = v_rgb

    def add_extra(self, key: str, value: Any) -> None:
        self.extras[key] = value

    # -------------------------------------------------------------------------------------------- regularisers
    def normal_consistency(self) -> Tensor:
        """Mean over edges of ``1 - cos(n_a, n_b)`` between the unit vertex normals at its ends (a scalar)."""
        normals = self.v_nrm[self.edges]
        return (1.0 - F.cosine_similarity(normals[:, 0], normals[:, 1], dim=-1)).mean()

    def laplacian(self) -> Tensor:
        """Mean over vertices of ``|sum_{j ~ i} (v_i - v_j)|`` (uniform Laplacian; neighbours along unique edges)."""
        a, b = self.edges[:, 0], self.edges[:, 1]
        diff = self.v_pos[a] - self.v_pos[b]
        lap = torch.zeros_like(self.v_pos).index_add(0, a, diff).index_add(0, b, -diff)
        return lap.norm(dim=-1).mean()

    # ----------------------------------------------------------------------------------------------- topology
    def remove_small_components(self, threshold: Union[int, float]) -> "Mesh":
        """Drop connected components with fewer faces than ``threshold`` (threestudio's rule).

        An ``int`` is a face count; a ``float`` a fraction of the largest component's faces. Vertex positions keep
        their gradient (the kept ones are indexed, not copied); UVs and colours are dropped (they would need the
        same remapping and are computed after cleaning).
        """
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        if self.n_faces == 0:
            return self
        faces = self.t_pos_idx.detach().cpu().numpy()
        n = self.n_vertices
        rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
        cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
        graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
        _, labels = connected_components(graph, directed=False)
        face_labels = labels[faces[:, 0]]
        counts = np.bincount(face_labels)
        min_faces = counts.max() * threshold if isinstance(threshold, float) else threshold
        keep_faces = faces[counts[face_labels] >= min_faces]
        used = np.unique(keep_faces)
        remap = np.full(n, -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        device = self.v_pos.device
        return Mesh(
            self.v_pos[torch.as_tensor(used, device=device, dtype=torch.long)],
            torch.as_tensor(remap[keep_faces].reshape(-1, 3), dtype=torch.long, device=device),
            **self.extras,
        )

    remove_outlier = remove_small_components
    """threestudio's name for ``remove_small_components``."""

    def unwrap_uv(
        self,
        chart_options: Optional[Mapping[str, Any]] = None,
        pack_options: Optional[Mapping[str, Any]] = None,
        key: str = "xatlas",
    ) -> None:
        """Set ``v_tex``, ``t_tex_idx`` from an xatlas atlas of this mesh.

        ``chart_options`` / ``pack_options`` set attributes of ``xatlas.ChartOptions`` / ``xatlas.PackOptions``
        (e.g. ``{"padding": 2, "resolution": 1024}``); ``key`` is the config key named when one is unknown or xatlas
        is missing. xatlas splits vertices along chart seams, so there are more UVs than positions.
        """
        self.v_tex, self.t_tex_idx = xatlas_unwrap(
            self.v_pos.detach(), self.t_pos_idx, chart_options or {}, pack_options or {}, key
        )

    # --------------------------------------------------------------------------------------------- conversion
    def to(self, device: Union[str, torch.device]) -> "Mesh":
        """A copy on ``device`` (the cached normals and edges are recomputed there)."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Mesh(move(self.v_pos), move(self.t_pos_idx), move(self.v_tex), move(self.t_tex_idx),
                    move(self.v_rgb), **self.extras)

    def detach(self) -> "Mesh":
        """A copy with no gradient through its positions, UVs or colours."""
        det = lambda t: None if t is None else t.detach()  # noqa: E731
        return Mesh(det(self.v_pos), self.t_pos_idx, det(self.v_tex), self.t_tex_idx, det(self.v_rgb), **self.extras)

    def __repr__(self) -> str:
        uv = f", {self.v_tex.shape[0]} uvs" if self.has_uv else ""
        return f"Mesh({self.n_vertices} vertices, {self.n_faces} faces{uv})"


def _apply_options(options: Any, values: Mapping[str, Any], key: str) -> None:
    valid = sorted(n for n in dir(options) if not n.startswith("_"))
    for name, value in values.items():
        if name not in valid:
            raise ConfigError(f"config error: {key}.{name}: unknown xatlas option; valid: {', '.join(valid)}")
        try:
            setattr(options, name, value)
        except TypeError:
            kind = type(getattr(options, name)).__name__
            raise ConfigError(f"config error: {key}.{name}: expected {kind}, got {value!r}") from None


def xatlas_unwrap(
    v_pos: Tensor,
    t_pos_idx: Tensor,
    chart_options: Mapping[str, Any],
    pack_options: Mapping[str, Any],
    key: str = "xatlas",
) -> Tuple[Tensor, Tensor]:
    """UV atlas of a mesh with xatlas: ``v_tex (T, 2)`` in [0, 1] and ``t_tex_idx (F, 3)``, on ``v_pos``'s device.

    ``key`` is the dotted config key that ``chart_options`` / ``pack_options`` came from, prefixed to
    ``xatlas_chart_options`` / ``xatlas_pack_options`` in error messages (``system.exporter``).
    """
    try:
        import xatlas
    except ImportError:
        raise UserError(
            f"config error: {key}.save_uv: UV unwrapping needs the xatlas package (pip install xatlas==0.0.11, "
            "as pinned in requirements.txt), or set save_uv: false"
        ) from None
    chart, pack = xatlas.ChartOptions(), xatlas.PackOptions()
    _apply_options(chart, chart_options, f"{key}.xatlas_chart_options")
    _apply_options(pack, pack_options, f"{key}.xatlas_pack_options")
    atlas = xatlas.Atlas()
    atlas.add_mesh(
        np.ascontiguousarray(v_pos.detach().float().cpu().numpy()),
        np.ascontiguousarray(t_pos_idx.cpu().numpy().astype(np.uint32)),
    )
    atlas.generate(chart, pack)
    _, indices, uvs = atlas.get_mesh(0)
    device = v_pos.device
    return (
        torch.as_tensor(uvs, dtype=torch.float32, device=device),
        torch.as_tensor(indices.astype(np.int64), device=device),
    )
