"""``implicit-volume``: a NeRF density and feature field, a hash grid followed by small MLPs (threestudio's).

``density(p) = activation(mlp_density(hash(contract(p))) + bias(p))`` where the bias starts the optimisation from a
blob at the origin (world coordinates, ``r = |p|``):

* ``blob_magic3d``: ``scale * (1 - r / std)`` (Magic3D),
* ``blob_dreamfusion``: ``scale * exp(-r^2 / (2 std^2))`` (DreamFusion),
* a number: a constant.

Normals, when asked, point outward (the negative density gradient), by forward (``finite_difference``) or central
(``finite_difference_laplacian``) differences with step ``finite_difference_normal_eps``, by autograd
(``analytic``), or from a third MLP (``pred``); ``null`` means the geometry has no normals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from framework import registry
from framework.config import NonNegativeInt, PositiveFloat
from framework.networks.activations import get_activation
from framework.geometry.base import BaseImplicitGeometry, contract_to_unit_cube
from framework.networks.hash_grid import HashGridConfig, HashGridEncoding
from framework.networks.mlp import MLPConfig, VanillaMLP

NormalType = Literal["finite_difference", "finite_difference_laplacian", "analytic", "pred"]


@registry.register("geometry", "implicit-volume")
class ImplicitVolume(BaseImplicitGeometry):
    """Hash-grid NeRF field with a density blob initialisation."""

    @dataclass
    class Config(BaseImplicitGeometry.Config):
        n_input_dims: Literal[3] = 3
        """Dimension of the points (3)."""
        n_feature_dims: NonNegativeInt = 3
        """Features per point passed to the material (0: density only)."""
        density_activation: str = "softplus"
        """Activation turning the raw density into a non-negative one (softplus, trunc_exp, exp, relu, ...)."""
        density_bias: Union[float, Literal["blob_magic3d", "blob_dreamfusion"]] = "blob_magic3d"
        """Pre-activation density offset: a blob at the origin (blob_magic3d, blob_dreamfusion) or a constant."""
        density_blob_scale: float = 10.0
        """Height of the density blob (pre-activation)."""
        density_blob_std: PositiveFloat = 0.5
        """Radius scale of the density blob."""
        pos_encoding_config: HashGridConfig = field(default_factory=HashGridConfig)
        """Multiresolution hash grid encoding of the points."""
        mlp_network_config: MLPConfig = field(default_factory=MLPConfig)
        """The density, feature and (pred) normal MLPs."""
        normal_type: Optional[NormalType] = None
        """How normals are computed: finite_difference, finite_difference_laplacian, analytic, pred; null: none."""
        finite_difference_normal_eps: PositiveFloat = 0.01
        """Step of the finite-difference normals, in world units."""

    cfg: Config

    def configure(self, **kwargs: Any) -> None:
        super().configure(**kwargs)
        cfg = self.cfg
        self.density_act = get_activation(cfg.density_activation, self.key("density_activation"))
        self.encoding = HashGridEncoding(cfg.n_input_dims, cfg.pos_encoding_config, self.key("pos_encoding_config"))
        mlp, mlp_key = cfg.mlp_network_config, self.key("mlp_network_config")
        self.density_network = VanillaMLP(self.encoding.n_output_dims, 1, mlp, mlp_key)
        if cfg.n_feature_dims > 0:
            self.feature_network = VanillaMLP(self.encoding.n_output_dims, cfg.n_feature_dims, mlp, mlp_key)
        if cfg.normal_type == "pred":
            self.normal_network = VanillaMLP(self.encoding.n_output_dims, 3, mlp, mlp_key)

    @property
    def has_normal(self) -> bool:
        """Whether ``forward(..., output_normal=True)`` can return normals."""
        return self.cfg.normal_type is not None

    def density_bias(self, points: Tensor) -> Union[float, Tensor]:
        """The pre-activation density offset at world ``points (..., 3)``: ``(..., 1)`` or a number."""
        cfg = self.cfg
        if cfg.density_bias == "blob_magic3d":
            return cfg.density_blob_scale * (1.0 - points.norm(dim=-1, keepdim=True) / cfg.density_blob_std)
        if cfg.density_bias == "blob_dreamfusion":
            r2 = (points**2).sum(dim=-1, keepdim=True)
            return cfg.density_blob_scale * torch.exp(-0.5 * r2 / cfg.density_blob_std**2)
        return float(cfg.density_bias)

    def _encode(self, points: Tensor) -> Tensor:
        x = contract_to_unit_cube(points, self.bbox, self.unbounded)
        return self.encoding(x.reshape(-1, self.cfg.n_input_dims))

    def _density_from_encoding(self, enc: Tensor, points: Tensor) -> Tensor:
        raw = self.density_network(enc).reshape(*points.shape[:-1], 1)
        return self.density_act(raw + self.density_bias(points))

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        """The encoding's schedule (ProgressiveBandHashGrid switches on levels over training)."""
        self.encoding.update_step(epoch, global_step, on_load_weights)

    def forward_density(self, points: Tensor) -> Tensor:
        """Density ``(..., 1)`` at world ``points (..., 3)``."""
        return self._density_from_encoding(self._encode(points), points)

    def forward_field(self, points: Tensor) -> Tensor:
        return self.forward_density(points)

    def forward(self, points: Tensor, output_normal: bool = False) -> Dict[str, Tensor]:
        """``density (..., 1)``, ``features (..., n_feature_dims)``, if asked ``normal``/``shading_normal (..., 3)``."""
        cfg = self.cfg
        if output_normal and cfg.normal_type is None:
            raise self.config_error(
                "normal_type", "normals were requested but normal_type is null; set it to finite_difference, "
                "analytic or pred"
            )
        grad_enabled = torch.is_grad_enabled()
        analytic = output_normal and cfg.normal_type == "analytic"
        with torch.set_grad_enabled(grad_enabled or analytic):
            if analytic and not points.requires_grad:
                points = points.detach().requires_grad_(True)
            enc = self._encode(points)
            density = self._density_from_encoding(enc, points)
            out: Dict[str, Tensor] = {"density": density}
            if cfg.n_feature_dims > 0:
                out["features"] = self.feature_network(enc).reshape(*points.shape[:-1], cfg.n_feature_dims)
            if output_normal:
                normal = self._normal(points, density, enc)
                if analytic and not grad_enabled:
                    normal = normal.detach()
                out["normal"] = normal
                out["shading_normal"] = normal
        if not grad_enabled:
            out = {k: v.detach() for k, v in out.items()}
        return out

    def _normal(self, points: Tensor, density: Tensor, enc: Tensor) -> Tensor:
        cfg = self.cfg
        eps = cfg.finite_difference_normal_eps
        r = cfg.radius
        if cfg.normal_type == "finite_difference":
            offsets = torch.eye(3, dtype=points.dtype, device=points.device) * eps
            shifted = (points[..., None, :] + offsets).clamp(-r, r)
            gradient = (self.forward_density(shifted)[..., 0] - density) / eps
        elif cfg.normal_type == "finite_difference_laplacian":
            eye = torch.eye(3, dtype=points.dtype, device=points.device) * eps
            offsets = torch.cat([eye, -eye], dim=0)
            d = self.forward_density((points[..., None, :] + offsets).clamp(-r, r))[..., 0]
            gradient = 0.5 * (d[..., :3] - d[..., 3:]) / eps
        elif cfg.normal_type == "analytic":
            gradient = torch.autograd.grad(density, points, torch.ones_like(density), create_graph=True)[0]
        else:  # pred
            return F.normalize(self.normal_network(enc).reshape(*points.shape[:-1], 3), dim=-1)
        return F.normalize(-gradient, dim=-1)

    def export(self, points: Tensor, **kwargs: Any) -> Dict[str, Any]:
        """``features`` at ``points`` (for vertex colours)."""
        if self.cfg.n_feature_dims == 0:
            return {}
        enc = self._encode(points)
        return {"features": self.feature_network(enc).reshape(*points.shape[:-1], self.cfg.n_feature_dims)}
