"""Conversion between stages (system.geometry_convert_from) from checkpoint files laid out as a trial folder, as a
user's earlier run leaves them; mesh regularisers against closed forms."""

import math
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

import framework.geometry  # noqa: F401
from framework import registry
from framework.errors import ConfigError, UserError
from systems.geometry_convert import convert_geometries, find_last_path
from systems import regularizers

SMALL_GRID = {"n_levels": 4, "log2_hashmap_size": 12, "base_resolution": 8, "backend": "torch"}
THRESHOLD = 5.0
RADIUS = 0.5 * (1 - math.log(math.exp(THRESHOLD) - 1) / 10)  # where softplus(10 (1 - r / 0.5)) = 5


def stage1_trial(root, name="a_cone@20260101-000000", n_particles=1, system_type="prolificdreamer-system"):
    """A trial folder of a stage-1 run whose density is the blob (density network zeroed): a sphere of RADIUS."""
    trial = root / name
    (trial / "ckpts").mkdir(parents=True)
    (trial / "configs").mkdir()
    geometry_cfg = {"radius": 1.0, "pos_encoding_config": SMALL_GRID, "isosurface_threshold": THRESHOLD}
    OmegaConf.save(
        OmegaConf.create({"system_type": system_type,
                          "system": {"geometry_type": "implicit-volume", "geometry": geometry_cfg}}),
        trial / "configs" / "parsed.yaml",
    )
    state = {}
    for i in range(n_particles):
        torch.manual_seed(i)
        geo = registry.find("geometry", "implicit-volume")(geometry_cfg)
        torch.nn.init.zeros_(geo.density_network.layers[-1].weight)
        state.update({f"particles.{i}.geometry.{k}": v for k, v in geo.state_dict().items()})
    state["guidance.camera_embedding.weight"] = torch.zeros(2, 2)
    torch.save({"state_dict": state, "global_step": 800, "epoch": 0,
                "framework": {"system_type": system_type, "global_step": 800}}, trial / "ckpts" / "last.ckpt")
    return trial


def system_cfg(path, **kw):
    cfg = dict(geometry_type="tetrahedra-sdf-grid", geometry_convert_from=str(path),
               geometry_convert_inherit_texture=False, geometry_convert_override={},
               geometry={"isosurface_resolution": 48, "pos_encoding_config": SMALL_GRID})
    cfg.update(kw)
    return SimpleNamespace(**cfg)


def test_stage1_checkpoint_converts_into_the_sphere_and_inherits_its_texture(tmp_path):
    trial = stage1_trial(tmp_path, n_particles=2)
    (geo,) = convert_geometries(system_cfg(trial / "ckpts" / "last.ckpt", geometry_convert_inherit_texture=True), 1)
    mesh = geo.isosurface()
    assert (mesh.v_pos.norm(dim=-1) - RADIUS).abs().max() < 0.01
    state = torch.load(trial / "ckpts" / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(geo.encoding.params, state["particles.0.geometry.encoding.params"])
    # particles convert from their own counterparts
    geos = convert_geometries(system_cfg(trial / "ckpts" / "last.ckpt", geometry_convert_inherit_texture=True), 2)
    assert torch.equal(geos[1].encoding.params, state["particles.1.geometry.encoding.params"])


def test_override_changes_the_threshold_and_names_its_keys(tmp_path):
    trial = stage1_trial(tmp_path)
    ckpt = trial / "ckpts" / "last.ckpt"
    lower = 1.0  # a lower density threshold: a larger sphere
    (geo,) = convert_geometries(system_cfg(ckpt, geometry_convert_override={"isosurface_threshold": lower}), 1)
    r = 0.5 * (1 - math.log(math.exp(lower) - 1) / 10)
    assert (geo.isosurface().v_pos.norm(dim=-1) - r).abs().max() < 0.01
    with pytest.raises(ConfigError, match="system.geometry_convert_override.isosurface_threshol: unknown key"):
        convert_geometries(system_cfg(ckpt, geometry_convert_override={"isosurface_threshol": 1.0}), 1)
    with pytest.raises(UserError, match="system.geometry_convert_override.isosurface_threshold: no surface"):
        convert_geometries(system_cfg(ckpt, geometry_convert_override={"isosurface_threshold": 500.0}), 1)


def test_bad_sources_get_one_line_naming_the_key(tmp_path):
    with pytest.raises(UserError, match="system.geometry_convert_from '.*nothing.ckpt' does not exist"):
        convert_geometries(system_cfg(tmp_path / "nothing.ckpt"), 1)
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    with pytest.raises(UserError, match="system.geometry_convert_from '.*junk.ckpt' is not a PyTorch checkpoint"):
        convert_geometries(system_cfg(tmp_path / "junk.ckpt"), 1)
    loose = tmp_path / "loose.ckpt"
    torch.save({"state_dict": {"particles.0.geometry.bbox": torch.zeros(2, 3)}}, loose)
    with pytest.raises(UserError, match="system.geometry_convert_from: .* is not inside a trial folder"):
        convert_geometries(system_cfg(loose), 1)
    image = stage1_trial(tmp_path, name="image", system_type="text-to-image-system")
    state = {"state_dict": {"particles": torch.zeros(2)}, "framework": {"system_type": "text-to-image-system"}}
    torch.save(state, image / "ckpts" / "last.ckpt")
    with pytest.raises(UserError, match="system.geometry_convert_from: .* by text-to-image-system, which has no 3D"):
        convert_geometries(system_cfg(image / "ckpts" / "last.ckpt"), 1)
    trial = stage1_trial(tmp_path)
    with pytest.raises(ConfigError, match="system.n_particles: 3 particles, but .* holds 1"):
        convert_geometries(system_cfg(trial / "ckpts" / "last.ckpt"), 3)
    with pytest.raises(ConfigError, match="system.geometry_type: implicit-volume cannot be initialised from"):
        convert_geometries(system_cfg(trial / "ckpts" / "last.ckpt", geometry_type="implicit-volume", geometry={}), 1)


def test_last_names_the_newest_trial(tmp_path):
    stage1_trial(tmp_path, name="a_cone@20260101-000000")
    newest = stage1_trial(tmp_path, name="a_cone@20260102-000000")
    stage1_trial(tmp_path, name="a_cube@20260103-000000")
    assert find_last_path(f"{tmp_path}/a_cone@LAST/ckpts/last.ckpt") == str(newest / "ckpts" / "last.ckpt")
    assert find_last_path("plain/path.ckpt") == "plain/path.ckpt"
    with pytest.raises(UserError, match="system.geometry_convert_from: .*no folder .* starting with 'a_torus@'"):
        find_last_path(f"{tmp_path}/a_torus@LAST/ckpts/last.ckpt")


# ------------------------------------------------------------------ mesh regularisers
def test_stage_regularisers_are_the_mesh_ones():
    """The geometry stage's losses are the Mesh's (tests/test_mesh.py checks those against closed forms)."""
    from framework.geometry.mesh import Mesh

    v = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
    f = torch.tensor([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    out = {"mesh": Mesh(v, f)}
    assert regularizers.normal_consistency(out).item() == pytest.approx(1.0)  # neighbouring normals perpendicular
    assert regularizers.laplacian_smoothness(out).item() == pytest.approx(4.0)  # |4 v_i - 0|
    assert regularizers.STAGE_REGULARIZERS["geometry"] == ("normal_consistency", "laplacian_smoothness")
    assert set(regularizers.STAGE_REGULARIZERS["coarse"]) == {"sparsity", "opaque", "z_variance", "orient"}
    assert regularizers.STAGE_REGULARIZERS["texture"] == ()
