"""mesh-exporter: the files it writes, read back with trimesh, against the closed-form blob and the trained field's
colours (sampled on the surface and rendered); textures, UVs, vertex colours, every format, the user's errors."""

import io
import math
import sys

import numpy as np
import pytest
import torch
import trimesh

import framework.exporters  # noqa: F401
import framework.geometry  # noqa: F401
import framework.materials  # noqa: F401
from framework import registry
from framework.errors import ConfigError, UserError
from framework.exporters.texture_bake import bake_texture
from framework.geometry.mesh import Mesh
from framework.renderers.raster_context import TorchRasterContext
from framework.utils.export_output import ExportOutput
from lab.raster_checks import MeshGeometry, colour_field, sphere_mesh

THRESHOLD = 5.0
RADIUS = 0.5 * (1 - math.log(math.exp(THRESHOLD) - 1) / 10)  # softplus(10 (1 - r / 0.5)) = 5


@pytest.fixture(scope="module")
def scene():
    torch.manual_seed(0)
    geometry = registry.find("geometry", "implicit-volume")(
        {
            "isosurface_threshold": THRESHOLD,
            "isosurface_resolution": 32,
            "pos_encoding_config": {"n_levels": 4, "log2_hashmap_size": 12, "backend": "torch"},
        }
    )
    torch.nn.init.zeros_(geometry.density_network.layers[-1].weight)  # density = the blob
    with torch.no_grad():  # colours that vary over the surface
        geometry.encoding.params.uniform_(-10.0, 10.0)
    material = registry.find("material", "no-material")({})
    return geometry, material


def field_albedo(geometry, points):
    """The material's albedo at world points, computed here directly from the networks."""
    with torch.no_grad():
        x = (torch.as_tensor(points, dtype=torch.float32) + 1) / 2
        return torch.sigmoid(geometry.feature_network(geometry.encoding(x))).numpy()


def exporter(**cfg):
    return registry.find("exporter", "mesh-exporter")(cfg, prefix="system.exporter")


def write_all(files, folder):
    for f in files:
        f.write(folder / f.filename)
        assert (folder / f.filename).read_bytes() == f.data


def load_one(path):
    loaded = trimesh.load(path, process=False)
    if isinstance(loaded, trimesh.Scene):
        (loaded,) = loaded.geometry.values()
    return loaded


def texture_colours_at_samples(mesh, n=3000):
    """Random surface points of a loaded textured mesh and the texture's colour there (bilinear, in [0, 1])."""
    points, face = trimesh.sample.sample_surface(mesh, n, seed=0)
    bary = trimesh.triangles.points_to_barycentric(mesh.triangles[face], points)
    uv = (mesh.visual.uv[mesh.faces[face]] * bary[..., None]).sum(1)
    material = mesh.visual.material
    picture = material.baseColorTexture if hasattr(material, "baseColorTexture") else material.image  # glTF / MTL
    image = torch.tensor(np.asarray(picture.convert("RGB")), dtype=torch.float32) / 255.0
    grid = torch.tensor(np.stack([uv[:, 0] * 2 - 1, 1 - uv[:, 1] * 2], -1), dtype=torch.float32)  # image row 0 = v 1
    colour = torch.nn.functional.grid_sample(image.permute(2, 0, 1)[None], grid[None, None], align_corners=False)
    return points, colour[0, :, 0].T.numpy()


def test_obj_and_ply_hold_the_blob_sphere_with_vertex_colours(scene, tmp_path):
    geometry, material = scene
    files = exporter(fmt=["obj", "ply"], save_name="blob", save_uv=False)(geometry, material)
    assert [f.filename for f in files] == ["blob.obj", "blob.ply"]
    write_all(files, tmp_path)
    for f in files:
        mesh = load_one(tmp_path / f.filename)
        r = np.linalg.norm(mesh.vertices, axis=1)
        assert np.abs(r - RADIUS).max() < 0.01
        assert mesh.is_watertight and mesh.volume > 0
        assert mesh.volume == pytest.approx(4 / 3 * math.pi * RADIUS**3, rel=0.02)
        expected = np.round(field_albedo(geometry, mesh.vertices) * 255)
        colours = mesh.visual.vertex_colors[:, :3].astype(np.float64)
        assert np.abs(colours - expected).max() <= 1.0
        assert colours.std() > 5  # not a flat colour


def test_threestudio_default_obj_mtl_texture_matches_the_trained_field(scene, tmp_path):
    geometry, material = scene
    files = exporter(texture_size=512, texture_format="png")(geometry, material)  # threestudio's defaults otherwise
    assert [f.filename for f in files] == ["model.obj", "model.mtl", "texture_kd.png"]
    write_all(files, tmp_path)
    assert "map_Kd texture_kd.png" in (tmp_path / "model.mtl").read_text()
    mesh = load_one(tmp_path / "model.obj")
    assert mesh.visual.kind == "texture" and mesh.visual.material.image.size == (512, 512)
    assert mesh.is_watertight or len(mesh.vertices) > 0
    points, colours = texture_colours_at_samples(mesh)
    error = np.abs(colours - field_albedo(geometry, points))
    # the colours vary on the hash grid's finest cells (about 0.04 units, some 10 texels): bilinear texels follow them
    assert error.mean() < 0.02 and np.percentile(error, 95) < 0.06, (error.mean(), np.percentile(error, 95))
    assert colours.std() > 0.05


@pytest.mark.parametrize("fmt,texture_format", [("obj-mtl", "png"), ("obj-mtl", "jpg"), ("glb", "png")])
def test_textured_files_of_any_mesh_geometry_sample_the_field(tmp_path, fmt, texture_format):
    geometry = MeshGeometry(sphere_mesh(0.5, 4))
    material = registry.find("material", "no-material")({})
    files = exporter(fmt=fmt, texture_size=256, texture_format=texture_format, save_normal=True)(geometry, material)
    write_all(files, tmp_path)
    mesh = load_one(tmp_path / ("model.glb" if fmt == "glb" else "model.obj"))
    assert len(mesh.faces) == 1280 * 4
    points, colours = texture_colours_at_samples(mesh)
    error = np.abs(colours - colour_field(torch.tensor(points, dtype=torch.float32)).numpy())
    bound = 0.01 if texture_format == "png" else 0.02  # 8-bit quantisation and bilinear sampling; JPEG adds its loss
    assert error.mean() < bound and error.max() < 8 * bound, (error.mean(), error.max())
    # normals were written: those of the sphere
    normals = mesh.vertex_normals
    assert np.abs((normals * mesh.vertices).sum(-1) / 0.5 - 1).max() < 0.01


def test_rendered_texture_matches_the_rendered_field(tmp_path):
    """The exported OBJ as a viewer shows it (rasterized, texture sampled) against the field at the same pixels."""
    from framework.data.cameras import camera_batch
    from framework.renderers.rasterize_torch import interpolate, rasterize

    geometry = MeshGeometry(sphere_mesh(0.5, 4))
    material = registry.find("material", "no-material")({})
    write_all(exporter(texture_size=512, texture_format="png")(geometry, material), tmp_path)
    mesh = load_one(tmp_path / "model.obj")
    batch = camera_batch(torch.tensor([30.0]), torch.tensor([60.0]), torch.tensor([2.0]), torch.tensor([40.0]), 64, 64)
    v = torch.tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.tensor(mesh.faces)
    clip = torch.cat([v, torch.ones(len(v), 1)], -1) @ batch["mvp_mtx"][0].T
    rast = rasterize(clip[None], faces, (64, 64))
    covered = rast[0, ..., 3] > 0
    uv = interpolate(torch.tensor(mesh.visual.uv, dtype=torch.float32), rast, faces)[0][covered]
    image = torch.tensor(np.asarray(mesh.visual.material.image.convert("RGB")), dtype=torch.float32) / 255.0
    grid = torch.stack([uv[:, 0] * 2 - 1, 1 - uv[:, 1] * 2], -1)
    shown = torch.nn.functional.grid_sample(image.permute(2, 0, 1)[None], grid[None, None], align_corners=False)
    truth = colour_field(interpolate(v, rast, faces)[0][covered])
    error = (shown[0, :, 0].T - truth).abs()
    assert covered.sum() > 1000 and error.mean() < 0.006 and error.max() < 0.05


def test_bake_pads_charts_and_slivers_with_their_own_colours():
    # a fan of thin triangles: at 32 texels most hold no texel centre, yet each one's texels show its own colour
    n = 40
    angles = torch.linspace(0, math.pi / 2, n + 1)
    v = torch.cat([torch.zeros(1, 3), torch.stack([angles.cos(), angles.sin(), torch.zeros(n + 1)], -1)])
    faces = torch.stack([torch.zeros(n, dtype=torch.long), torch.arange(1, n + 1), torch.arange(2, n + 2)], -1)
    mesh = Mesh(v, faces, v_tex=v[:, :2] * 0.9 + 0.05, t_tex_idx=faces)
    image, filled = bake_texture(mesh, colour_field, 32, TorchRasterContext(), padding=2.0)
    uv = (mesh.v_tex[faces].mean(1) * 32 - 0.5).round().long()  # the texel at each face's UV centroid
    assert filled[uv[:, 1], uv[:, 0]].all()
    centroid_colour = colour_field(v[faces].mean(1)).numpy()
    texel_colour = image[uv[:, 1], uv[:, 0]]
    assert np.abs(texel_colour - centroid_colour).max() < 0.1  # within a texel of the centroid on a smooth field
    rast = TorchRasterContext().rasterize(
        torch.cat([mesh.v_tex * 2 - 1, torch.zeros(n + 2, 1), torch.ones(n + 2, 1)], -1)[None], faces, (32, 32))
    assert (rast[0, ..., 3] > 0).sum() < filled.sum()  # padding added texels beyond the centres inside triangles


def test_vertex_colour_glb_and_no_colour(scene, tmp_path):
    geometry, material = scene
    files = exporter(fmt="glb", save_uv=False)(geometry, material)
    write_all(files, tmp_path)
    mesh = load_one(tmp_path / "model.glb")
    expected = np.round(field_albedo(geometry, mesh.vertices) * 255)
    assert np.abs(mesh.visual.vertex_colors[:, :3].astype(float) - expected).max() <= 1.0
    files = exporter(fmt="obj", save_texture=False, save_uv=False)(geometry, material)
    text = files[0].data.decode()
    vertex_line = next(line for line in text.splitlines() if line.startswith("v "))
    assert len(vertex_line.split()) == 4 and "vt " not in text  # x y z, no colour, no UVs
    files = exporter(fmt="obj-mtl", save_texture=False)(geometry, material)
    assert [f.filename for f in files] == ["model.obj", "model.mtl"] and "vt " in files[0].data.decode()
    assert "map_Kd" not in files[1].data.decode()
    mesh = exporter(texture_size=64).mesh(geometry, material)
    assert isinstance(mesh, Mesh) and mesh.has_uv and mesh.extras["texture"].shape == (64, 64, 3)


def test_user_errors_name_the_full_key(scene, monkeypatch):
    geometry, material = scene
    with pytest.raises(ConfigError, match=r"system\.exporter\.fmt: expected one of 'obj-mtl', 'obj', 'ply', 'glb'"):
        exporter(fmt="fbx")
    with pytest.raises(ConfigError, match=r"system\.exporter\.texture_size: must be in \[1, 16384\], got 0"):
        exporter(texture_size=0)
    with pytest.raises(ConfigError, match=r"system\.exporter\.texture_size: must be in \[1, 16384\], got 100000"):
        exporter(texture_size=100000)
    with pytest.raises(ConfigError, match=r"system\.exporter\.save_uv: fmt obj-mtl writes colours as a texture"):
        exporter(save_uv=False)
    with pytest.raises(ConfigError, match=r"system\.exporter\.fmt: obj-mtl and obj both write model\.obj"):
        exporter(fmt=["obj-mtl", "obj"])
    with pytest.raises(ConfigError, match=r"system\.exporter\.xatlas_pack_options\.padd: unknown xatlas option"):
        exporter(xatlas_pack_options={"padd": 4})(geometry, material)
    monkeypatch.setitem(sys.modules, "xatlas", None)
    with pytest.raises(UserError, match=r"system\.exporter\.save_uv: UV unwrapping needs the xatlas package"):
        exporter()(geometry, material)
    exporter(fmt="ply")(geometry, material)  # no UVs needed: works without xatlas


def test_a_material_without_albedo_gives_a_warning_and_no_colours(scene, capsys):
    geometry, _ = scene

    class Unlit(registry.find("material", "no-material")):
        def export(self, features, **kwargs):
            return {}

    files = exporter(fmt=["obj-mtl", "ply"], texture_size=32)(geometry, Unlit({}))
    assert [f.filename for f in files] == ["model.obj", "model.mtl", "model.ply"]  # no texture file
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "system.exporter.save_texture: the material (Unlit) exports no albedo" in err[0]


def test_export_outputs_are_plain_files(scene):
    geometry, material = scene
    for f in exporter(fmt="glb", texture_size=64)(geometry, material):
        assert isinstance(f, ExportOutput) and isinstance(f.data, bytes)
        assert trimesh.load(io.BytesIO(f.data), file_type="glb").geometry


@pytest.mark.slow
def test_threestudio_export_command_on_a_stage_1_checkpoint(tiny_sd, tiny_sd_v, tiny_embedding_cache, tmp_path, capsys):
    """threestudio's README export command, on a trained implicit-volume (about 40 s on 2 cores): the textured OBJ
    loads, and its texture shows the checkpoint's field; a bad format is one line and exit 2."""
    import launch
    from framework.builtin import import_builtin_modules
    from framework.utils.checkpoint import load_checkpoint, state_dict_of

    import_builtin_modules()
    train = [
        f"system.prompt_processor.pretrained_model_name_or_path={tiny_sd}", "system.prompt_processor.prompt=a cat",
        f"system.prompt_processor.cache_dir={tiny_embedding_cache}",
        f"system.guidance.pretrained_model_name_or_path={tiny_sd}",
        f"system.guidance.pretrained_model_name_or_path_lora={tiny_sd_v}", "data.height=16", "data.width=16",
        "data.eval_height=16", "data.eval_width=16", "data.n_test_views=2", "system.renderer.num_samples_per_ray=8",
        "system.geometry.pos_encoding_config.n_levels=4", "system.geometry.pos_encoding_config.log2_hashmap_size=10",
        "system.geometry.isosurface_resolution=32", "system.geometry.isosurface_threshold=auto",
        f"exp_root_dir={tmp_path}", "use_timestamp=false", "tag=train", "trainer.max_steps=2",
    ]
    assert launch.main(["--config", "vsd.yaml", "--train", *train]) == 0
    trial = tmp_path / "prolificdreamer" / "train"
    command = ["--config", str(trial / "configs" / "parsed.yaml"), "--export",
               f"resume={trial / 'ckpts' / 'last.ckpt'}", "system.exporter_type=mesh-exporter",
               "system.exporter.fmt=obj-mtl", "tag=export"]
    assert launch.main(command) == 0
    folder = tmp_path / "prolificdreamer" / "export" / "save" / "it2-export"
    assert sorted(p.name for p in folder.iterdir()) == ["model.mtl", "model.obj", "texture_kd.jpg"]
    mesh = load_one(folder / "model.obj")
    assert mesh.visual.kind == "texture" and mesh.visual.material.image.size == (1024, 1024)
    # the trained field: the checkpoint's geometry and material, evaluated at the sampled surface points
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(trial / "configs" / "parsed.yaml"), resolve=True)["system"]
    geometry = registry.find("geometry", cfg["geometry_type"])(cfg["geometry"])
    material = registry.find("material", cfg["material_type"])(cfg["material"])
    state = state_dict_of(load_checkpoint(trial / "ckpts" / "last.ckpt"), trial / "ckpts" / "last.ckpt")
    for prefix, module in (("particles.0.geometry.", geometry), ("particles.0.material.", material)):
        module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    points, colours = texture_colours_at_samples(mesh)
    with torch.no_grad():
        p = torch.tensor(points, dtype=torch.float32)
        expected = material.export(**geometry.export(p))["albedo"].numpy()
    error = np.abs(colours - expected)
    assert error.mean() < 0.03, error.mean()
    capsys.readouterr()
    assert launch.main([*command[:-2], "system.exporter.fmt=fbx", "tag=bad"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "system.exporter.fmt: expected one of 'obj-mtl', 'obj', 'ply', 'glb'" in err[0]
    assert not (tmp_path / "prolificdreamer" / "bad").exists()
