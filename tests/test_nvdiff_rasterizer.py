"""nvdiff-rasterizer: threestudio's outputs, colours against the field, gradients into every module, a system step."""

import pytest
import torch

import framework.backgrounds  # noqa: F401
import framework.geometry  # noqa: F401
import framework.materials  # noqa: F401
import framework.renderers  # noqa: F401
from framework import registry
from framework.data.cameras import camera_batch
from framework.errors import ConfigError
from framework.renderers.nvdiff_rasterizer import pixel_ray_directions
from lab.raster_checks import MeshGeometry, colour_field, ray_sphere, sphere_mesh


def batch_of(res=32, elevation=20.0, azimuth=30.0):
    b = camera_batch(torch.tensor([elevation, -10.0]), torch.tensor([azimuth, 200.0]), torch.tensor([2.0, 2.2]),
                     torch.tensor([45.0, 50.0]), res, res)
    b["light_positions"] = b["camera_positions"] * 1.5
    return b


def make(geometry, material="no-material", background="solid-color-background", material_cfg=None,
         background_cfg=None, **cfg):
    mat = registry.find("material", material)(material_cfg or {})
    bg_cfg = {"color": [0.2, 0.3, 0.4]} if background == "solid-color-background" else {}
    bg = registry.find("background", background)(background_cfg or bg_cfg)
    renderer = registry.find("renderer", "nvdiff-rasterizer")(
        {"backend": "torch", **cfg}, prefix="system.renderer", geometry=geometry, material=mat, background=bg)
    return renderer, mat, bg


def test_outputs_colours_and_background():
    geometry = MeshGeometry(sphere_mesh(0.5, 3))
    renderer, _, _ = make(geometry)
    batch = batch_of()
    with torch.no_grad():
        out = renderer(**batch)
    for key in ("comp_rgb", "comp_rgb_fg", "comp_rgb_bg", "comp_normal"):
        assert out[key].shape == (2, 32, 32, 3), key
    assert out["opacity"].shape == out["depth"].shape == (2, 32, 32, 1)
    assert out["mesh"].n_faces == 1280
    hit = torch.isfinite(ray_sphere(batch["rays_o"], batch["rays_d"], 0.5)[0])
    solid = out["opacity"][..., 0] >= 1.0
    empty = out["opacity"][..., 0] == 0.0
    assert solid.sum() > 0.8 * hit.sum() and (solid & ~hit).sum() == 0
    # inside: the field's colour at the surface point; outside: the background
    points = batch["camera_positions"][:, None, None, :] + out["depth"] * batch["rays_d"]
    assert (out["comp_rgb"][solid] - colour_field(points[solid])).abs().max() < 5e-3
    assert torch.allclose(out["comp_rgb"][empty], torch.tensor([0.2, 0.3, 0.4]).expand(int(empty.sum()), 3))
    assert torch.allclose(out["comp_rgb_fg"], out["comp_rgb"] - (1 - out["opacity"]) * out["comp_rgb_bg"], atol=1e-5)
    assert (out["comp_normal"][empty] == 0).all()


def test_without_rgb_and_with_a_background_colour():
    renderer, _, _ = make(MeshGeometry(sphere_mesh(0.5, 2)))
    batch = batch_of(16)
    out = renderer(**batch, render_rgb=False)
    assert "comp_rgb" not in out and {"opacity", "comp_normal", "depth", "mesh"} <= set(out)
    out = renderer(**batch, bg_color=torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    empty = out["opacity"][..., 0] == 0
    assert torch.equal(out["comp_rgb"][0][empty[0]][0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(out["comp_rgb"][1][empty[1]][0], torch.tensor([0.0, 1.0, 0.0]))


def test_background_directions_are_the_camera_rays():
    batch = batch_of(20)
    dirs = pixel_ray_directions(batch["mvp_mtx"], 20, 20)
    assert (dirs - batch["rays_d"]).abs().max() < 1e-4


def test_gradients_reach_vertices_material_and_background():
    geometry = MeshGeometry(sphere_mesh(0.5, 2), trainable=True)
    renderer, material, background = make(
        geometry, "diffuse-with-point-light-material", "neural-environment-map-background",
        material_cfg={"ambient_only_steps": 0, "diffuse_prob": 1.0, "textureless_prob": 0.0},
        background_cfg={"random_aug": False})
    renderer.train()
    torch.manual_seed(0)
    out = renderer(**batch_of(24))
    (out["comp_rgb"] * torch.randn_like(out["comp_rgb"])).sum().backward()
    assert geometry.v_pos.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in background.parameters())
    # the normal map alone (ProlificDreamer's geometry stage) moves the vertices too
    geometry.v_pos.grad = None
    out = renderer(**batch_of(24), render_rgb=False)
    (out["comp_normal"] * torch.randn_like(out["comp_normal"])).sum().backward()
    assert geometry.v_pos.grad.abs().sum() > 0
    assert torch.isfinite(out["mesh"].normal_consistency()) and torch.isfinite(out["mesh"].laplacian())


def test_the_implicit_volume_renders_through_its_isosurface():
    geometry = registry.find("geometry", "implicit-volume")(
        {"isosurface_threshold": 5.0, "isosurface_resolution": 24,
         "pos_encoding_config": {"n_levels": 4, "log2_hashmap_size": 10, "backend": "torch"}})
    torch.nn.init.zeros_(geometry.density_network.layers[-1].weight)  # density: the blob alone, a sphere
    renderer, _, _ = make(geometry)
    batch = batch_of(24)
    out = renderer(**batch)
    radius = 0.5 * (1 - torch.log(torch.expm1(torch.tensor(5.0))) / 10)  # softplus(10 (1 - r / 0.5)) = 5
    hit = torch.isfinite(ray_sphere(batch["rays_o"], batch["rays_d"], float(radius))[0])
    covered = out["opacity"][..., 0] > 0.5
    assert (covered & hit).sum() / (covered | hit).sum() > 0.9
    out["comp_rgb"].sum().backward()
    assert geometry.encoding.params.grad.abs().sum() > 0  # features are learned at the surface points


def test_config_errors_name_the_key():
    geometry = MeshGeometry(sphere_mesh(0.5, 1))
    renderer, _, _ = make(geometry, backend="nvdiffrast")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"system\.renderer\.backend: nvdiffrast is not usable here"):
            renderer(**batch_of(8))
    with pytest.raises(ConfigError, match=r"system\.renderer\.context_type: expected one of 'gl', 'cuda'"):
        make(geometry, context_type="vulkan")


def test_a_text_to_3d_system_trains_and_validates_with_the_rasterizer(tiny_sd, tiny_sd_v, tiny_embedding_cache):
    import systems  # noqa: F401
    from framework.builtin import import_builtin_modules
    from framework.utils.seeding import generator

    import_builtin_modules()

    cfg = {
        "geometry": {"isosurface_threshold": 5.0, "isosurface_resolution": 16,
                     "pos_encoding_config": {"n_levels": 4, "log2_hashmap_size": 10}},
        "renderer_type": "nvdiff-rasterizer",
        "renderer": {"context_type": "gl"},
        "prompt_processor": {"pretrained_model_name_or_path": tiny_sd, "prompt": "a photo of a cat",
                             "cache_dir": str(tiny_embedding_cache)},
        "guidance": {"pretrained_model_name_or_path": tiny_sd, "pretrained_model_name_or_path_lora": tiny_sd_v},
        "loss": {"lambda_vsd": 1.0, "lambda_lora": 1.0},
        "optimizer": {"name": "AdamW", "args": {"lr": 0.01},
                      "params": {"geometry": {"lr": 0.01}, "background": {"lr": 0.001}, "guidance": {"lr": 0.0001}}},
    }
    system = registry.find("system", "prolificdreamer-system")(cfg, seed=0)
    dm = registry.find("data", "random-camera-datamodule")({"height": 16, "width": 16, "batch_size": 1}, seed=0)
    batch = dm.sample_train(0, generator(0, 0, 0))
    losses = system.training_losses(batch)
    (losses["loss_vsd"] + losses["loss_lora"]).backward()
    assert system.geometry.feature_network.layers[0].weight.grad.abs().sum() > 0
    system.eval()
    panels = system.validation_panels(dm.sample_train(1, generator(0, 0, 1)))
    assert [p.kind for p in panels] == ["rgb", "normal", "grayscale"]
    assert panels[2].img.max() > 0  # the blob is in view
