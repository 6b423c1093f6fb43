"""``tetrahedra-sdf-grid``: DMTet (Shen et al. 2021), the mesh geometry of ProlificDreamer's stages 2 and 3
(threestudio's name and fields).

A signed distance per vertex of a tetrahedral grid (``framework.geometry.marching_tetrahedra``; negative inside) and,
with ``isosurface_deformable_grid``, an offset per vertex, ``tanh(deformation)`` times half a grid cell. Every
``isosurface()`` marches the grid afresh, so image losses on the rasterized mesh reach both. The grid spans
``isosurface_bbox``: the bounding box by default, the stage-1 mesh's box enlarged by 10% after a conversion (more
resolution on the object). The colour comes from a texture field queried at surface points: a hash grid and an MLP
over the whole bounding box (``forward``), as in the implicit volume, so a stage-1 field can be inherited as it is.

``fix_geometry`` turns the SDF and the deformation into buffers and computes the mesh once (texture stage);
``geometry_only`` builds no texture field (geometry stage). The SDF starts at zero (no surface): a run gets its
surface from a conversion (``system.geometry_convert_from``) or from ``shape_init``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from framework import registry
from framework.config import Bounds, NonNegativeFloat, NonNegativeInt
from framework.errors import ConfigError, UserError
from framework.geometry.base import (
    BaseExplicitGeometry,
    BaseGeometry,
    BaseImplicitGeometry,
    Mesh,
    contract_to_unit_cube,
)
from framework.geometry.marching_tetrahedra import cells_for_resolution, marching_tetrahedra, tet_grid
from framework.networks.hash_grid import HashGridConfig, HashGridEncoding
from framework.networks.mlp import MLPConfig, VanillaMLP

@registry.register("geometry", "tetrahedra-sdf-grid")
class TetrahedraSDFGrid(BaseExplicitGeometry):
    """Deformable tetrahedral grid with an SDF per vertex, meshed by differentiable marching tetrahedra."""

    @dataclass
    class Config(BaseExplicitGeometry.Config):
        isosurface_resolution: Annotated[int, Bounds(ge=2)] = 128
        """Tetrahedral grid resolution, threestudio's meaning: tetrahedra 2/resolution of the box wide (128: 274,625
        vertices, 1.57M tetrahedra)."""
        isosurface_deformable_grid: bool = True
        """Learn an offset per grid vertex (up to half a grid cell) besides the SDF."""
        isosurface_remove_outliers: bool = False
        """Drop small disconnected pieces of the mesh."""
        isosurface_outlier_n_faces_threshold: Union[NonNegativeInt, NonNegativeFloat] = 0.01
        """Pieces with fewer faces than this are dropped: a face count (int) or a fraction of the largest piece's
        faces (float), threestudio's rule."""
        n_input_dims: int = 3
        """Dimension of the points (3)."""
        n_feature_dims: NonNegativeInt = 3
        """Features of the texture field passed to the material."""
        pos_encoding_config: HashGridConfig = field(default_factory=HashGridConfig)
        """Hash grid encoding of the texture field."""
        mlp_network_config: MLPConfig = field(default_factory=MLPConfig)
        """The texture field's MLP (features from the encoding)."""
        shape_init: Optional[str] = None
        """Initial shape: sphere (shape_init_params: radius) or ellipsoid (shape_init_params: three semi-axes);
        null: none. threestudio's mesh:<file> is refused with a message (not supported here)."""
        shape_init_params: Optional[Any] = None
        """Parameters of shape_init (see there)."""
        shape_init_mesh_up: str = "+z"
        """threestudio's up axis of a mesh:<file> shape (accepted for its configs; mesh files are not supported)."""
        shape_init_mesh_front: str = "+x"
        """threestudio's front axis of a mesh:<file> shape (accepted for its configs; mesh files are not supported)."""
        force_shape_init: bool = False
        """Accepted for threestudio configs, no effect: shape_init is always applied when the geometry is built, and
        loaded weights or a conversion replace it."""
        geometry_only: bool = False
        """No texture field: forward returns nothing (geometry stage, where normals are rendered)."""
        fix_geometry: bool = False
        """Freeze the SDF and deformation (buffers, not parameters) and mesh once (texture stage)."""

    cfg: Config

    def configure(self, **kwargs: Any) -> None:
        super().configure(**kwargs)
        cfg = self.cfg
        if cfg.n_input_dims != 3:
            raise self.config_error("n_input_dims", f"only 3-D points are supported, got {cfg.n_input_dims}")
        self.register_buffer("isosurface_bbox", self.bbox.clone())
        unit, tets = tet_grid(cfg.isosurface_resolution)
        self.register_buffer("grid_vertices", unit, persistent=False)  # (V, 3) in [0, 1]^3, shared by the cache
        self.register_buffer("tets", tets, persistent=False)  # (T, 4) int32
        self.deformation_scale = 0.5 / cells_for_resolution(cfg.isosurface_resolution)  # half a cell
        n_vertices = unit.shape[0]
        sdf = torch.zeros(n_vertices, 1)
        deformation = torch.zeros(n_vertices, 3) if cfg.isosurface_deformable_grid else None
        if cfg.fix_geometry:
            self.register_buffer("sdf", sdf)
            self.register_buffer("deformation", deformation)
        else:
            self.sdf = nn.Parameter(sdf)
            self.deformation = nn.Parameter(deformation) if deformation is not None else None
        if not cfg.geometry_only:
            self.encoding = HashGridEncoding(cfg.n_input_dims, cfg.pos_encoding_config)
            self.feature_network = VanillaMLP(self.encoding.n_output_dims, cfg.n_feature_dims, cfg.mlp_network_config)
        self._mesh: Optional[Mesh] = None
        self._mesh_key: Optional[Tuple[Any, ...]] = None
        if cfg.shape_init is not None:
            self.initialize_shape()

    # ------------------------------------------------------------------ the surface
    def grid_positions(self) -> Tensor:
        """World positions ``(V, 3)`` of the (deformed) grid vertices."""
        unit = self.grid_vertices
        if self.deformation is not None:
            unit = unit + self.deformation_scale * torch.tanh(self.deformation)
        box = self.isosurface_bbox
        return box[0] + unit * (box[1] - box[0])

    def _state_key(self) -> Tuple[Any, ...]:
        """Changes whenever the SDF, deformation or box change (in place or replaced), for the fixed-geometry cache."""
        tensors = [t for t in (self.sdf, self.deformation, self.isosurface_bbox) if t is not None]
        return tuple((id(t), t._version, t.device) for t in tensors)

    def isosurface(self) -> Mesh:
        """The surface ``sdf = 0`` in world units, differentiable in the SDF and deformation (cached when fixed)."""
        if self.cfg.fix_geometry and self._mesh is not None and self._mesh_key == self._state_key():
            return self._mesh
        v_pos, faces = marching_tetrahedra(self.grid_positions(), self.sdf, self.tets)
        mesh = Mesh(v_pos, faces)
        if self.cfg.isosurface_remove_outliers:
            mesh = mesh.remove_small_components(self.cfg.isosurface_outlier_n_faces_threshold)
        if mesh.n_faces == 0:
            hint = (
                "its SDF is still zero everywhere: start it from a stage-1 run (system.geometry_convert_from="
                "<trial>/ckpts/last.ckpt) or a shape (system.geometry.shape_init: sphere)"
                if not bool((self.sdf != 0).any())
                else "every grid vertex is on one side of the surface (the shape vanished or fills the grid)"
            )
            raise UserError(f"{self.key('sdf')}: the tetrahedra-sdf-grid has no surface; {hint}")
        if self.cfg.fix_geometry:
            self._mesh, self._mesh_key = mesh, self._state_key()
        return mesh

    # ------------------------------------------------------------------ the texture field
    def _features(self, points: Tensor) -> Tensor:
        x = contract_to_unit_cube(points, self.bbox, self.unbounded)
        enc = self.encoding(x.reshape(-1, self.cfg.n_input_dims))
        return self.feature_network(enc).reshape(*points.shape[:-1], self.cfg.n_feature_dims)

    def forward(self, points: Tensor, output_normal: bool = False) -> Dict[str, Tensor]:
        """``features (..., n_feature_dims)`` of the texture field at world ``points (..., 3)`` (nothing when
        ``geometry_only``). Normals come from the mesh, not from here."""
        if output_normal:
            raise ConfigError(
                f"config error: {self.key('isosurface_resolution')}: tetrahedra-sdf-grid returns no normals from its "
                "field (renderers take them from its mesh); use a renderer for meshes (nvdiff-rasterizer)"
            )
        if self.cfg.geometry_only:
            return {}
        return {"features": self._features(points)}

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        """The texture encoding's schedule (ProgressiveBandHashGrid)."""
        if not self.cfg.geometry_only:
            self.encoding.update_step(epoch, global_step, on_load_weights)

    def export(self, points: Tensor, **kwargs: Any) -> Dict[str, Any]:
        """``features`` at ``points`` (for texture baking or vertex colours); nothing when ``geometry_only``."""
        if self.cfg.geometry_only or self.cfg.n_feature_dims == 0:
            return {}
        return {"features": self._features(points)}

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def initialize_shape(self) -> None:
        """Set the SDF from ``shape_init`` at the grid vertices (world units)."""
        cfg = self.cfg
        kind, params = cfg.shape_init, cfg.shape_init_params
        points = self.grid_positions()
        if kind == "sphere":
            radius = _positive_number(params, self.key("shape_init_params"), "a radius")
            sdf = points.norm(dim=-1, keepdim=True) - radius
        elif kind == "ellipsoid":
            if not (isinstance(params, (list, tuple)) and len(params) == 3):
                raise ConfigError(
                    f"config error: {self.key('shape_init_params')}: ellipsoid needs three semi-axes, e.g. "
                    f"[0.5, 0.4, 0.3], got {params!r}"
                )
            size = torch.tensor([_positive_number(p, self.key("shape_init_params"), "semi-axes") for p in params])
            sdf = (points / size.to(points)).norm(dim=-1, keepdim=True) - 1.0  # a pseudo distance, as threestudio's
        elif isinstance(kind, str) and kind.startswith("mesh:"):
            raise ConfigError(
                f"config error: {self.key('shape_init')}: mesh:<file> initialisation is not supported (sphere and "
                "ellipsoid are); start from a stage-1 run with system.geometry_convert_from instead"
            )
        else:
            raise ConfigError(
                f"config error: {self.key('shape_init')}: unknown shape '{kind}'; use sphere, ellipsoid or "
                "mesh:<path>, or null"
            )
        self.sdf.copy_(sdf.to(self.sdf))

    # ------------------------------------------------------------------ conversion
    @classmethod
    @torch.no_grad()
    def create_from(
        cls,
        other: BaseGeometry,
        cfg: Any = None,
        prefix: str = "system.geometry",
        copy_net: bool = False,
        copy_net_key: str = "system.geometry_convert_inherit_texture",
    ) -> "TetrahedraSDFGrid":
        """A grid initialised from another geometry (threestudio's conversion between stages).

        From an implicit geometry: its field is marched on this grid's tetrahedra (``mt`` at this resolution, coarse
        to fine as the source is configured), the grid is laid over the source mesh's enlarged box, and the SDF is
        the source's level there (``threshold - density``) clamped to [-1, 1]. From another ``tetrahedra-sdf-grid`` of
        the same resolution: its box, SDF and (when both deform) deformation. With ``copy_net`` the texture field
        (encoding and feature network) is copied too.
        """
        instance = cls(cfg, prefix=prefix)
        if isinstance(other, TetrahedraSDFGrid):
            if other.cfg.isosurface_resolution != instance.cfg.isosurface_resolution:
                raise ConfigError(
                    f"config error: {instance.key('isosurface_resolution')}: the converted grid has resolution "
                    f"{other.cfg.isosurface_resolution}, this one {instance.cfg.isosurface_resolution}; make them equal"
                )
            instance.isosurface_bbox.copy_(other.isosurface_bbox)
            instance.sdf.copy_(other.sdf)
            if instance.deformation is not None and other.deformation is not None:
                instance.deformation.copy_(other.deformation)
            source_has_net = not other.cfg.geometry_only
        elif isinstance(other, BaseImplicitGeometry):
            other.cfg = dataclasses.replace(
                other.cfg, isosurface_method="mt", isosurface_resolution=instance.cfg.isosurface_resolution
            )
            iso = other.isosurface_with_grid()
            instance.isosurface_bbox.copy_(iso.bbox)
            instance.sdf.copy_(iso.level.to(instance.sdf).clamp(-1.0, 1.0))
            source_has_net = getattr(other.cfg, "n_feature_dims", 0) > 0
        else:
            raise ConfigError(
                f"config error: {prefix}_type: cannot convert a {type(other).__name__} into a tetrahedra-sdf-grid"
            )
        instance.to(other.bbox.device)
        if copy_net:
            instance._copy_texture_from(other, source_has_net, copy_net_key)
        return instance

    def _copy_texture_from(self, other: BaseGeometry, source_has_net: bool, key: str) -> None:
        if self.cfg.geometry_only:
            raise ConfigError(
                f"config error: {key}: this geometry has no texture field to inherit into ({self.key('geometry_only')} "
                "is true); set one of them to false"
            )
        if not source_has_net:
            raise ConfigError(f"config error: {key}: the converted geometry has no texture field; set it to false")
        if float((other.bbox - self.bbox).abs().max()) > 1e-6:
            raise ConfigError(
                f"config error: {self.key('radius')}: the inherited texture field spans radius "
                f"{float(other.bbox[1, 0]):g}, this geometry {float(self.bbox[1, 0]):g}; make them equal"
            )
        try:
            self.encoding.load_state_dict(other.encoding.state_dict())
            self.feature_network.load_state_dict(other.feature_network.state_dict())
        except RuntimeError as e:
            detail = str(e).strip().splitlines()[-1].strip()[:160]
            raise ConfigError(
                f"config error: {key}: the converted texture field does not fit this one (set "
                f"{self.key('pos_encoding_config')}, mlp_network_config and n_feature_dims as in the converted run): "
                f"{detail}"
            ) from None


def _positive_number(value: Any, key: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != value:
        raise ConfigError(f"config error: {key}: expected {what} (a positive number), got {value!r}")
    return float(value)
