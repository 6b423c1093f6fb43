"""implicit-volume: density bias and activation, normals, isosurface, config parsing; docstrings of every Config."""

import dataclasses
import math
import typing

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import framework.backgrounds  # noqa: F401
import framework.data  # noqa: F401
import framework.exporters  # noqa: F401
import framework.geometry  # noqa: F401
import framework.materials  # noqa: F401
import framework.renderers  # noqa: F401
from framework import registry
from framework.config import field_docs
from framework.errors import ConfigError, UserError
from framework.geometry.base import Mesh, marching_cubes

SMALL_GRID = {"n_levels": 4, "log2_hashmap_size": 12, "base_resolution": 8, "backend": "torch"}


def volume(**cfg):
    cfg.setdefault("pos_encoding_config", SMALL_GRID)
    torch.manual_seed(0)
    geo = registry.find("geometry", "implicit-volume")(cfg)
    return geo


def blob_only(**cfg):
    """A volume whose density network outputs 0: its density is the activated blob, a closed form."""
    geo = volume(**cfg)
    torch.nn.init.zeros_(geo.density_network.layers[-1].weight)
    return geo


def test_blob_magic3d_density():
    geo = blob_only()
    p = torch.rand(100, 3) * 2 - 1
    r = p.norm(dim=-1, keepdim=True)
    with torch.no_grad():
        assert torch.allclose(geo.forward_density(p), F.softplus(10.0 * (1 - r / 0.5)), atol=1e-5)
        assert torch.allclose(geo(p)["density"], F.softplus(10.0 * (1 - r / 0.5)), atol=1e-5)


def test_blob_dreamfusion_density_and_other_activations():
    geo = blob_only(density_bias="blob_dreamfusion", density_blob_scale=5.0, density_blob_std=0.2, density_activation="exp")
    p = torch.rand(50, 3) * 2 - 1
    expected = torch.exp(5.0 * torch.exp(-0.5 * (p**2).sum(-1, keepdim=True) / 0.04))
    with torch.no_grad():
        assert torch.allclose(geo.forward_density(p), expected, rtol=1e-5)
    geo = blob_only(density_bias=-1.5, density_activation="trunc_exp")
    with torch.no_grad():
        assert torch.allclose(geo.forward_density(p), torch.full((50, 1), math.exp(-1.5)), rtol=1e-5)


def test_outputs_and_gradients():
    geo = volume(n_feature_dims=5)
    p = torch.rand(64, 3) * 2 - 1
    out = geo(p)
    assert set(out) == {"density", "features"}
    assert out["density"].shape == (64, 1) and out["features"].shape == (64, 5)
    assert (out["density"] >= 0).all()
    (out["density"].sum() + out["features"].sum()).backward()
    assert geo.encoding.params.grad.abs().sum() > 0
    assert geo.density_network.layers[0].weight.grad.abs().sum() > 0
    assert geo.feature_network.layers[0].weight.grad.abs().sum() > 0
    assert geo(p.view(4, 16, 3))["density"].shape == (4, 16, 1)


@pytest.mark.parametrize("normal_type", ["finite_difference", "finite_difference_laplacian", "analytic"])
def test_normals_of_the_blob_point_outward(normal_type):
    geo = blob_only(normal_type=normal_type, finite_difference_normal_eps=1e-3)
    torch.manual_seed(3)
    p = F.normalize(torch.randn(200, 3), dim=-1) * (torch.rand(200, 1) * 0.6 + 0.1)
    out = geo(p, output_normal=True)
    radial = F.normalize(p, dim=-1)
    cos = (out["normal"] * radial).sum(-1)
    assert cos.min() > 0.99
    assert torch.equal(out["normal"], out["shading_normal"])
    assert torch.allclose(out["normal"].norm(dim=-1), torch.ones(200), atol=1e-5)


def test_analytic_normals_are_differentiable_in_training_and_detached_without_grad():
    geo = volume(normal_type="analytic")
    p = torch.rand(16, 3) * 2 - 1
    out = geo(p, output_normal=True)
    out["normal"].sum().backward()
    assert geo.encoding.params.grad is not None
    with torch.no_grad():
        out = geo(p, output_normal=True)
    assert not out["normal"].requires_grad and not p.requires_grad


def test_predicted_normals_are_unit_vectors():
    geo = volume(normal_type="pred")
    out = geo(torch.rand(10, 3), output_normal=True)
    assert torch.allclose(out["normal"].norm(dim=-1), torch.ones(10), atol=1e-5)
    assert hasattr(geo, "normal_network")


def test_normals_without_normal_type_fail_clearly():
    geo = volume()
    assert not geo.has_normal
    with pytest.raises(ConfigError, match="normal_type"):
        geo(torch.rand(2, 3), output_normal=True)


@pytest.mark.parametrize("method,resolution", [("mc-cpu", 24), ("mt", 48)])  # samples 2/23 and 2/24 of the box apart
def test_isosurface_of_the_blob_is_the_closed_form_sphere(method, resolution):
    threshold = 5.0
    # softplus(10 (1 - r / 0.5)) = 5  <=>  r = 0.5 (1 - log(e^5 - 1) / 10)
    radius = 0.5 * (1 - math.log(math.exp(threshold) - 1) / 10)
    common = dict(isosurface_threshold=threshold, isosurface_resolution=resolution, isosurface_method=method)
    coarse = blob_only(isosurface_coarse_to_fine=False, **common)
    fine = blob_only(**common)
    errors = []
    for geo, rel in ((coarse, 0.1), (fine, 0.02)):
        mesh = geo.isosurface()
        v = mesh.v_pos.double()
        r = v.norm(dim=-1)
        tri = v[mesh.t_pos_idx]
        signed_volume = (tri[:, 0] * torch.linalg.cross(tri[:, 1], tri[:, 2], dim=-1)).sum() / 6
        assert signed_volume > 0  # faces wind counter-clockwise seen from outside
        assert signed_volume.item() == pytest.approx(4 / 3 * math.pi * radius**3, rel=rel)
        errors.append((r - radius).abs().max().item())
    assert errors[0] < 2.0 / 23  # within a coarse cell
    assert errors[1] < errors[0] and errors[1] < 0.01


def test_isosurface_auto_threshold_and_errors():
    geo = blob_only(isosurface_threshold="auto", isosurface_resolution=16, isosurface_coarse_to_fine=False)
    assert geo.isosurface().n_faces > 0
    for method in ("mt", "mc-cpu"):
        with pytest.raises(UserError, match="system.geometry.isosurface_threshold: no surface"):
            geo = registry.find("geometry", "implicit-volume")(
                {"pos_encoding_config": SMALL_GRID, "isosurface_threshold": 25.0, "isosurface_resolution": 8,
                 "isosurface_method": method, "density_bias": -20.0}, prefix="system.geometry")
            geo.isosurface()


def test_small_components_are_removed():
    g = np.linspace(-1, 1, 40)
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    field = np.maximum(0.5 - np.sqrt((x + 0.4) ** 2 + y**2 + z**2), 0.1 - np.sqrt((x - 0.6) ** 2 + y**2 + z**2))
    mesh = marching_cubes(field, 0.0, np.array([[-1.0] * 3, [1.0] * 3]))
    cleaned = mesh.remove_small_components(0.2)
    assert 0 < cleaned.n_faces < mesh.n_faces
    assert (cleaned.v_pos[:, 0] < 0.3).all()  # the small ball around x = 0.6 is gone
    assert cleaned.t_pos_idx.max() < cleaned.v_pos.shape[0]
    assert isinstance(cleaned, Mesh)


def test_threestudio_yaml_block_parses_and_typos_fail():
    geo = registry.find("geometry", "implicit-volume")(
        {
            "radius": 1.0,
            "normal_type": None,
            "density_bias": "blob_magic3d",
            "density_activation": "softplus",
            "density_blob_scale": 10.0,
            "density_blob_std": 0.5,
            "pos_encoding_config": {
                "otype": "HashGrid",
                "n_levels": 2,
                "n_features_per_level": 2,
                "log2_hashmap_size": 10,
                "base_resolution": 16,
                "per_level_scale": 1.447269237440378,
            },
            "mlp_network_config": {
                "otype": "VanillaMLP",
                "activation": "ReLU",
                "output_activation": "none",
                "n_neurons": 64,
                "n_hidden_layers": 1,
            },
        }
    )
    assert geo.encoding.n_output_dims == 4
    with pytest.raises(ConfigError, match="n_level"):
        registry.find("geometry", "implicit-volume")({"pos_encoding_config": {"n_level": 4}})
    with pytest.raises(ConfigError, match="density_bias"):
        registry.find("geometry", "implicit-volume")({"density_bias": "blob"})
    with pytest.raises(ConfigError, match="density_activation"):
        registry.find("geometry", "implicit-volume")({"density_activation": "softpluss"})


MY_MODULES = [
    ("data", "random-camera-datamodule"),
    ("geometry", "implicit-volume"),
    ("material", "no-material"),
    ("material", "diffuse-with-point-light-material"),
    ("background", "solid-color-background"),
    ("background", "neural-environment-map-background"),
    ("renderer", "nerf-volume-renderer"),
    ("exporter", "mesh-exporter"),
]


def _config_classes(cls, seen):
    """``cls`` and every Config dataclass nested in its fields (directly or inside Optional/Union)."""
    if cls in seen:
        return
    seen.append(cls)
    for tp in typing.get_type_hints(cls).values():
        for candidate in (tp, *typing.get_args(tp)):
            if dataclasses.is_dataclass(candidate):
                _config_classes(candidate, seen)


@pytest.mark.parametrize("kind, name", MY_MODULES)
def test_every_config_field_has_a_docstring(kind, name):
    classes = []
    _config_classes(registry.find(kind, name).Config, classes)
    for cls in classes:
        docs = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert not missing, f"{cls.__qualname__}: fields without a docstring: {missing}"


def test_contraction():
    from framework.geometry.base import contract_to_unit_cube

    bbox = torch.tensor([[-2.0, -2.0, -2.0], [2.0, 2.0, 2.0]])
    x = torch.tensor([[-2.0, -2.0, -2.0], [2.0, 2.0, 2.0], [0.0, 1.0, -1.0]])
    assert torch.allclose(contract_to_unit_cube(x, bbox), torch.tensor([[0.0] * 3, [1.0] * 3, [0.5, 0.75, 0.25]]))
    # unbounded: the box maps to the ball of radius 1/4; a point at normalised distance m > 1 to (2 - 1/m) / 4
    far = torch.tensor([[8.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    y = contract_to_unit_cube(far, bbox, unbounded=True)
    assert torch.allclose(y[0], torch.tensor([0.5 + (2 - 1 / 4) / 4, 0.5, 0.5]))
    assert torch.allclose(y[1], torch.tensor([0.5, 0.5, 0.5 - 0.5 / 4]))
