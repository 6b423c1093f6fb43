"""Geometry base classes: the interface renderers rely on, the scene's bounding box, the map into the encoding's
unit cube, and isosurface extraction.

The interface (threestudio's), declared on the base classes below and implemented by every geometry::

    geometry(points (..., 3), output_normal=False)          # every geometry
        -> {"density": (..., 1), "features": (..., n_feature_dims), "normal": (..., 3), "shading_normal": (..., 3)}
        # what the geometry has: a surface geometry returns features only; normals only if asked and has_normal
    geometry.has_normal -> bool                               # whether forward can return normals
    geometry.isosurface() -> Mesh                             # the surface as a triangle mesh
    geometry.export(points) -> {"features": ...}              # what an exporter colours vertices with
    geometry.forward_density(points) -> (..., 1)             # implicit geometries: what volume renderers integrate
    geometry.forward_field(points) -> (..., 1)               # implicit geometries: the field meshed by isosurface

``BaseImplicitGeometry`` (a field in the box: ``implicit-volume``) is rendered by volume renderers and meshed by
marching cubes (``mc-cpu``) or marching tetrahedra (``mt``); ``BaseExplicitGeometry`` (a surface:
``tetrahedra-sdf-grid``) is rendered by rasterizers through its ``isosurface``. Normals point outward: along the
negative density gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Dict, Literal, NamedTuple, Union

import numpy as np
import torch
from torch import Tensor

from framework.config import Bounds, NonNegativeFloat, NonNegativeInt, PositiveFloat
from framework.errors import ConfigError, UserError
from framework.geometry.marching_tetrahedra import marching_tetrahedra, tet_grid
from framework.geometry.mesh import Mesh
from framework.module import BaseModule


def contract_to_unit_cube(x: Tensor, bbox: Tensor, unbounded: bool = False) -> Tensor:
    """Map world points into ``[0, 1]^3``: the box ``bbox (2, 3)`` linearly, or (``unbounded``) all of space.

    Unbounded: the box maps to the ball of radius 1/4 around the cube's center; outside it, a point at normalised
    distance ``m > 1`` goes to distance ``(2 - 1/m) / 4`` (threestudio's ``contract_to_unisphere``).
    """
    x = (x - bbox[0]) / (bbox[1] - bbox[0])
    if not unbounded:
        return x
    x = x * 2.0 - 1.0
    mag = x.norm(dim=-1, keepdim=True)
    far = mag > 1.0
    x = torch.where(far, (2.0 - 1.0 / mag.clamp(min=1.0)) * x / mag.clamp(min=1e-12), x)
    return x / 4.0 + 0.5


def marching_cubes(field: np.ndarray, threshold: float, bbox: np.ndarray) -> Mesh:
    """The surface ``field == threshold`` of a density sampled on a regular grid ``(R, R, R)`` spanning ``bbox (2, 3)``.

    The inside (field above the threshold) is enclosed counter-clockwise, so face normals point outward.
    """
    import mcubes

    vertices, faces = mcubes.marching_cubes(field.astype(np.float64), float(threshold))
    resolution = np.array(field.shape, dtype=np.float64)
    vertices = bbox[0] + vertices / (resolution - 1.0) * (bbox[1] - bbox[0])
    return Mesh(torch.as_tensor(vertices, dtype=torch.float32), torch.as_tensor(faces.astype(np.int64)))


class BaseGeometry(BaseModule):
    """A geometry: a registered module that maps points to features (and density or distance) and has a surface."""

    @dataclass
    class Config:
        radius: PositiveFloat = 1.0
        """Half the side of the scene's bounding box, centered at the origin."""

    cfg: Config

    def configure(self, **kwargs: Any) -> None:
        r = self.cfg.radius
        self.register_buffer("bbox", torch.tensor([[-r, -r, -r], [r, r, r]], dtype=torch.float32))
        self.unbounded = False

    def forward(self, points: Tensor, output_normal: bool = False) -> Dict[str, Tensor]:
        """What the geometry holds at world ``points (..., 3)`` (see the module docstring for the keys)."""
        raise NotImplementedError

    @property
    def has_normal(self) -> bool:
        """Whether ``forward(..., output_normal=True)`` can return normals."""
        return False

    def isosurface(self) -> Mesh:
        """The geometry's surface as a triangle mesh (world units, faces counter-clockwise seen from outside)."""
        raise NotImplementedError

    def export(self, points: Tensor, **kwargs: Any) -> Dict[str, Any]:
        """Quantities at ``points`` that an exporter uses (e.g. vertex colours); none by default."""
        return {}

    @classmethod
    def create_from(
        cls,
        other: "BaseGeometry",
        cfg: Any = None,
        prefix: str = "system.geometry",
        copy_net: bool = False,
        **kwargs: Any,
    ) -> "BaseGeometry":
        """A geometry of this type configured by ``cfg`` and initialised from ``other`` (a conversion between stages,
        ``system.geometry_convert_from``); ``copy_net`` also takes ``other``'s texture field. None by default."""
        raise ConfigError(
            f"config error: {prefix}_type: {getattr(cls, 'registered_name', cls.__name__)} cannot be initialised from "
            f"a {getattr(type(other), 'registered_name', type(other).__name__)} (system.geometry_convert_from); "
            "convert into tetrahedra-sdf-grid"
        )


class Isosurface(NamedTuple):
    """A mesh extracted from a sampled field, with the samples it came from (what a DMTet conversion starts from)."""

    mesh: Mesh
    """The surface."""
    bbox: Tensor
    """``(2, 3)``: the box the sample grid spanned."""
    level: Tensor
    """``(N, 1)``: the level (negative inside) at the grid's vertices: tetrahedral grid vertices for ``mt``, the
    regular grid in ``ij`` order for ``mc-cpu``."""


class BaseImplicitGeometry(BaseGeometry):
    """A geometry given by a scalar field in the bounding box; meshed by marching cubes or marching tetrahedra."""

    @dataclass
    class Config(BaseGeometry.Config):
        isosurface: bool = True
        """Whether the field can be meshed (export, conversion to a mesh geometry)."""
        isosurface_method: Literal["mt", "mc-cpu"] = "mt"
        """Meshing method: marching tetrahedra on the grid of isosurface_resolution (threestudio's default), or
        marching cubes on the CPU (PyMCubes) on isosurface_resolution^3 points."""
        isosurface_resolution: Annotated[int, Bounds(ge=2, le=1024)] = 128
        """Grid resolution: mt: threestudio's tetrahedral grid of that name (tetrahedra 2/resolution of the box
        wide); mc-cpu: grid points per axis."""
        isosurface_threshold: Union[float, Literal["auto"]] = 25.0
        """Density of the surface; auto: the mean density of the grid points with density above 1e-5."""
        isosurface_chunk: NonNegativeInt = 65536
        """Points per field evaluation while meshing (0: all at once)."""
        isosurface_coarse_to_fine: bool = True
        """Mesh once on the bounding box, then again on the mesh's box enlarged by 10% (finer detail)."""
        isosurface_remove_outliers: bool = True
        """Drop small disconnected pieces of the mesh."""
        isosurface_outlier_n_faces_threshold: Union[NonNegativeInt, NonNegativeFloat] = 0.01
        """Smaller pieces are dropped: an int is a face count, a float a fraction of the largest piece's faces."""

    cfg: Config

    def forward_density(self, points: Tensor) -> Tensor:
        """Density ``(..., 1)`` at world ``points (..., 3)``: what a volume renderer integrates."""
        raise NotImplementedError

    def forward_field(self, points: Tensor) -> Tensor:
        """The field meshed by ``isosurface`` (a density, inside above the threshold), ``(..., 1)``."""
        return self.forward_density(points)

    def forward_level(self, field: Tensor, threshold: float) -> Tensor:
        """The field as a level set, negative inside and zero on the surface: ``threshold - density``."""
        return -(field - threshold)

    def isosurface_threshold(self, field: Tensor) -> float:
        """The configured threshold, or (``auto``) the mean of the sampled ``field`` where it exceeds 1e-5."""
        if self.cfg.isosurface_threshold == "auto":
            above = field[field > 1e-5]
            if above.numel() == 0:
                raise UserError(
                    f"config error: {self.key('isosurface_threshold')}: auto: the density is zero everywhere in the "
                    "bounding box; there is no surface to mesh (was the field trained?)"
                )
            return float(above.mean())
        return float(self.cfg.isosurface_threshold)

    @torch.no_grad()
    def _sample(self, points: Tensor) -> Tensor:
        chunk = self.cfg.isosurface_chunk if self.cfg.isosurface_chunk > 0 else max(1, points.shape[0])
        values = [self.forward_field(points[i : i + chunk])[..., :1].float() for i in range(0, points.shape[0], chunk)]
        return torch.cat(values) if values else points.new_zeros(0, 1)

    def _grid(self, bbox: Tensor) -> Tensor:
        """The sample points of ``isosurface_method`` in ``bbox``: ``(N, 3)``."""
        res = self.cfg.isosurface_resolution
        if self.cfg.isosurface_method == "mt":
            unit, _ = tet_grid(res)
            return bbox[0] + unit.to(bbox.device) * (bbox[1] - bbox[0])
        axes = [torch.linspace(float(bbox[0, k]), float(bbox[1, k]), res, device=bbox.device) for k in range(3)]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)

    def _isosurface(self, bbox: Tensor) -> Isosurface:
        points = self._grid(bbox)
        field = self._sample(points)
        threshold = self.isosurface_threshold(field)
        low, high = float(field.min()), float(field.max())
        if not low < threshold < high:
            raise UserError(
                f"config error: {self.key('isosurface_threshold')}: no surface at density {threshold:g} (the density "
                f"on the grid lies in [{low:g}, {high:g}]); set it inside that range or to auto"
            )
        level = self.forward_level(field, threshold)
        if self.cfg.isosurface_method == "mt":
            _, tets = tet_grid(self.cfg.isosurface_resolution)
            v_pos, faces = marching_tetrahedra(points, level, tets.to(points.device))
            mesh = Mesh(v_pos, faces)
        else:
            res = self.cfg.isosurface_resolution
            density = field.reshape(res, res, res).cpu().numpy()
            mesh = marching_cubes(density, threshold, bbox.cpu().numpy())
            mesh = Mesh(mesh.v_pos.to(bbox.device), mesh.t_pos_idx.to(bbox.device))
        return Isosurface(mesh, bbox, level)

    def isosurface_with_grid(self) -> Isosurface:
        """The surface ``field == isosurface_threshold`` with the grid it was marched on (positions in world units).

        With ``isosurface_coarse_to_fine`` the grid is laid a second time over the first mesh's box enlarged by 10%
        (the auto threshold is taken again on it, as threestudio does); outliers are removed from the mesh only.
        """
        if not self.cfg.isosurface:
            raise UserError(f"config error: {self.key('isosurface')}: meshing is disabled; set it to true")
        iso = self._isosurface(self.bbox)
        if self.cfg.isosurface_coarse_to_fine:
            mesh = iso.mesh
            if self.cfg.isosurface_remove_outliers:
                mesh = mesh.remove_small_components(self.cfg.isosurface_outlier_n_faces_threshold)
            if mesh.n_faces > 0:
                vmin, vmax = mesh.v_pos.amin(dim=0).to(self.bbox), mesh.v_pos.amax(dim=0).to(self.bbox)
                margin = (vmax - vmin) * 0.1
                low = torch.maximum(vmin - margin, self.bbox[0])
                tight = torch.stack([low, torch.minimum(vmax + margin, self.bbox[1])])
                iso = self._isosurface(tight)
        if self.cfg.isosurface_remove_outliers:
            iso = iso._replace(mesh=iso.mesh.remove_small_components(self.cfg.isosurface_outlier_n_faces_threshold))
        return iso

    def isosurface(self) -> Mesh:
        """Mesh the surface ``field == isosurface_threshold`` (see ``isosurface_with_grid``)."""
        return self.isosurface_with_grid().mesh


class BaseExplicitGeometry(BaseGeometry):
    """A geometry that is a surface (a mesh, possibly recomputed from parameters at every call): rasterized."""
