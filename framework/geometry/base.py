"""Geometry base classes: the scene's bounding box, the map into the encoding's unit cube, and isosurface extraction.

Interface of every geometry (threestudio's)::

    geometry(points (..., 3), output_normal=False)
        -> {"density": (..., 1), "features": (..., n_feature_dims), "normal": (..., 3), "shading_normal": (..., 3)}
        # normals only if asked
    geometry.forward_density(points) -> (..., 1)
    geometry.export(points) -> {"features": ...}   # what an exporter colours vertices with
    geometry.isosurface() -> Mesh                   # marching cubes on the density field

Normals point outward: along the negative density gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Dict, Literal, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from framework.config import Bounds, NonNegativeFloat, NonNegativeInt, PositiveFloat
from framework.errors import UserError
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
    """A geometry: a registered module that maps points to density (or distance) and features."""

    @dataclass
    class Config:
        radius: PositiveFloat = 1.0
        """Half the side of the scene's bounding box, centered at the origin."""

    cfg: Config

    def configure(self, **kwargs: Any) -> None:
        r = self.cfg.radius
        self.register_buffer("bbox", torch.tensor([[-r, -r, -r], [r, r, r]], dtype=torch.float32))
        self.unbounded = False

    def export(self, points: Tensor, **kwargs: Any) -> Dict[str, Any]:
        """Quantities at ``points`` that an exporter uses (e.g. vertex colours); none by default."""
        return {}


class BaseImplicitGeometry(BaseGeometry):
    """A geometry given by a scalar field in the bounding box, with marching-cubes isosurface extraction."""

    @dataclass
    class Config(BaseGeometry.Config):
        isosurface: bool = True
        """Whether the field can be meshed (export)."""
        isosurface_method: Literal["mc-cpu"] = "mc-cpu"
        """Meshing method: marching cubes on the CPU (PyMCubes)."""
        isosurface_resolution: Annotated[int, Bounds(ge=2, le=1024)] = 128
        """Grid vertices per axis for marching cubes."""
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

    def forward_field(self, points: Tensor) -> Tensor:
        """The field meshed by ``isosurface`` (density; inside is above the threshold), ``(..., 1)``."""
        raise NotImplementedError

    @torch.no_grad()
    def _sample_field(self, bbox: Tensor) -> np.ndarray:
        res = self.cfg.isosurface_resolution
        axes = [torch.linspace(float(bbox[0, k]), float(bbox[1, k]), res, device=self.bbox.device) for k in range(3)]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
        chunk = self.cfg.isosurface_chunk if self.cfg.isosurface_chunk > 0 else grid.shape[0]
        values = [self.forward_field(grid[i : i + chunk])[..., 0].float().cpu() for i in range(0, grid.shape[0], chunk)]
        return torch.cat(values).reshape(res, res, res).numpy()

    def _threshold(self, field: np.ndarray) -> float:
        if self.cfg.isosurface_threshold == "auto":
            above = field[field > 1e-5]
            if above.size == 0:
                raise UserError("isosurface: the density is zero everywhere in the bounding box; nothing to mesh")
            return float(above.mean())
        return float(self.cfg.isosurface_threshold)

    def _isosurface(self, bbox: Tensor) -> Tuple[Mesh, float, np.ndarray]:
        field = self._sample_field(bbox)
        threshold = self._threshold(field)
        if not field.min() < threshold < field.max():
            raise UserError(
                f"isosurface: no surface at density {threshold:g} (the density on the grid lies in "
                f"[{field.min():g}, {field.max():g}]); set {self.key('isosurface_threshold')} inside that range "
                "or to auto"
            )
        return marching_cubes(field, threshold, bbox.cpu().numpy()), threshold, field

    def isosurface(self) -> Mesh:
        """Mesh the surface ``field == isosurface_threshold`` by marching cubes (positions in world units)."""
        if not self.cfg.isosurface:
            raise UserError(f"isosurface: disabled by {self.key('isosurface')}: false")
        mesh, _, _ = self._isosurface(self.bbox)
        if self.cfg.isosurface_coarse_to_fine and mesh.n_faces > 0:
            vmin, vmax = mesh.v_pos.amin(dim=0).to(self.bbox), mesh.v_pos.amax(dim=0).to(self.bbox)
            margin = (vmax - vmin) * 0.1
            low = torch.maximum(vmin - margin, self.bbox[0])
            high = torch.minimum(vmax + margin, self.bbox[1])
            tight = torch.stack([low, high])
            mesh, _, _ = self._isosurface(tight)
        if self.cfg.isosurface_remove_outliers:
            mesh = mesh.remove_small_components(self.cfg.isosurface_outlier_n_faces_threshold)
        return mesh

