"""Materials and backgrounds against hand-computed shading, and the spherical harmonics basis against quadrature."""

import math

import pytest
import torch
import torch.nn.functional as F

import framework.backgrounds  # noqa: F401
import framework.materials  # noqa: F401
from framework import registry
from framework.errors import ConfigError
from framework.networks.spherical_harmonics import spherical_harmonics


def material(name, **cfg):
    return registry.find("material", name)(cfg)


def background(name, **cfg):
    return registry.find("background", name)(cfg)


def test_no_material_is_the_activated_features():
    m = material("no-material")
    f = torch.randn(4, 5, 3)
    assert torch.allclose(m(features=f, viewdirs=torch.zeros(4, 5, 3)), torch.sigmoid(f))
    assert torch.allclose(m.export(f)["albedo"], torch.sigmoid(f))
    with pytest.raises(ValueError, match="n_feature_dims"):
        m(features=torch.randn(4, 2))
    m = material("no-material", input_feature_dims=6, mlp_network_config={"n_neurons": 8, "n_hidden_layers": 1})
    out = m(features=torch.randn(7, 6))
    assert out.shape == (7, 3) and ((out > 0) & (out < 1)).all()
    with pytest.raises(ConfigError):
        material("no-material", input_feature_dims=6)


def _shading_inputs():
    torch.manual_seed(0)
    n = 50
    features = torch.randn(n, 3)
    positions = torch.randn(n, 3) * 0.3
    normals = F.normalize(torch.randn(n, 3), dim=-1)
    lights = torch.randn(n, 3) * 2
    return features, positions, normals, lights


def test_diffuse_material_closed_form():
    m = material("diffuse-with-point-light-material", ambient_light_color=[0.1, 0.2, 0.3], diffuse_light_color=[0.9, 0.8, 0.7])
    m.eval()
    features, positions, normals, lights = _shading_inputs()
    albedo = torch.sigmoid(features)
    # direct per-point Lambert: ambient + diffuse * max(0, n . l)
    light = torch.stack(
        [
            torch.tensor([0.1, 0.2, 0.3]) + torch.tensor([0.9, 0.8, 0.7]) * max(0.0, float(n @ F.normalize(l - p, dim=0)))
            for n, l, p in zip(normals, lights, positions)
        ]
    )
    kwargs = dict(features=features, positions=positions, shading_normal=normals, light_positions=lights)
    assert torch.allclose(m(**kwargs), albedo * light, atol=1e-6)  # eval default: diffuse
    assert torch.allclose(m(**kwargs, shading="textureless"), light, atol=1e-6)
    assert torch.allclose(m(**kwargs, shading="albedo"), albedo, atol=1e-6)
    ratio = 0.3
    light_r = torch.stack(
        [0.3 + 0.7 * torch.clamp((n * F.normalize(l - p, dim=0)).sum(), min=0.0).expand(3) for n, l, p in zip(normals, lights, positions)]
    )
    assert torch.allclose(m(**kwargs, ambient_ratio=ratio), albedo * light_r, atol=1e-6)
    assert torch.allclose(m.export(features)["albedo"], albedo)
    assert m.requires_normal


def test_diffuse_material_augmentation_frequencies():
    m = material("diffuse-with-point-light-material", diffuse_prob=0.75, textureless_prob=0.5, ambient_only_steps=10)
    m.train()
    m.update_step(0, 5)
    assert {m.choose_shading() for _ in range(50)} == {"albedo"}
    m.update_step(0, 10)
    torch.manual_seed(0)
    draws = [m.choose_shading() for _ in range(4000)]
    freq = {s: draws.count(s) / len(draws) for s in ("albedo", "textureless", "diffuse")}
    assert freq["albedo"] == pytest.approx(0.25, abs=0.03)
    assert freq["textureless"] == pytest.approx(0.375, abs=0.03)
    assert freq["diffuse"] == pytest.approx(0.375, abs=0.03)
    m.eval()
    assert m.choose_shading() == "diffuse"
    m.update_step(0, 0)
    assert m.choose_shading() == "albedo"


def test_spherical_harmonics_are_orthonormal():
    # midpoint quadrature on a latitude-longitude grid: integral of Y_i Y_j over the sphere = delta_ij
    n_theta, n_phi = 200, 400
    theta = (torch.arange(n_theta, dtype=torch.float64) + 0.5) * math.pi / n_theta
    phi = (torch.arange(n_phi, dtype=torch.float64) + 0.5) * 2 * math.pi / n_phi
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    dirs = torch.stack([torch.sin(t) * torch.cos(p), torch.sin(t) * torch.sin(p), torch.cos(t)], dim=-1).reshape(-1, 3)
    area = (torch.sin(t) * (math.pi / n_theta) * (2 * math.pi / n_phi)).reshape(-1)
    for degree in (1, 2, 3, 4):
        y = spherical_harmonics(dirs, degree)
        assert y.shape[-1] == degree**2
        gram = (y * area[:, None]).T @ y
        assert torch.allclose(gram, torch.eye(degree**2, dtype=torch.float64), atol=1e-3)


def test_neural_environment_map():
    torch.manual_seed(0)
    bg = background("neural-environment-map-background", random_aug=False)
    dirs = F.normalize(torch.randn(2, 4, 5, 3), dim=-1)
    color = bg(dirs)
    assert color.shape == (2, 4, 5, 3) and ((color > 0) & (color < 1)).all()
    expected = torch.sigmoid(bg.network(spherical_harmonics(dirs.reshape(-1, 3), 3))).reshape(2, 4, 5, 3)
    assert torch.allclose(color, expected)
    color.sum().backward()
    assert bg.network.layers[0].weight.grad is not None
    bg = background("neural-environment-map-background", eval_color=[0.5, 0.25, 1.0])
    bg.eval()
    assert torch.allclose(bg(dirs), torch.tensor([0.5, 0.25, 1.0]).expand(2, 4, 5, 3))
    assert background("neural-environment-map-background").cfg.random_aug  # prolificdreamer's setting


def test_random_background_augmentation():
    bg = background("solid-color-background", color=[0.2, 0.4, 0.6], random_aug=True, random_aug_prob=0.5)
    dirs = torch.zeros(3, 4, 4, 3)
    bg.train()
    torch.manual_seed(0)
    augmented = 0
    for _ in range(400):
        c = bg(dirs)
        if not torch.allclose(c, torch.tensor([0.2, 0.4, 0.6]).expand(3, 4, 4, 3)):
            augmented += 1
            # one colour per image
            assert torch.allclose(c, c[:, :1, :1].expand_as(c))
            assert not torch.allclose(c[0], c[1])
    assert augmented / 400 == pytest.approx(0.5, abs=0.08)
    bg.eval()
    assert torch.allclose(bg(dirs), torch.tensor([0.2, 0.4, 0.6]).expand(3, 4, 4, 3))


def test_solid_color_background():
    bg = background("solid-color-background")
    assert torch.equal(bg(torch.zeros(1, 2, 2, 3)), torch.ones(1, 2, 2, 3))
    learned = background("solid-color-background", learned=True, color=[0.0, 0.5, 1.0])
    learned(torch.zeros(1, 2, 2, 3)).sum().backward()
    assert torch.equal(learned.env_color.grad, torch.full((3,), 4.0))
    with pytest.raises(ConfigError, match="color"):
        background("solid-color-background", color=[1.0, 1.0])
