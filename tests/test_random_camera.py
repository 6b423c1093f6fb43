"""random-camera-datamodule: schedules, ranges, determinism, lights and the orbit datasets."""

import math

import pytest
import torch
import torch.nn.functional as F

import framework.data  # noqa: F401
from framework import registry
from framework.data.cameras import spherical_to_cartesian
from framework.errors import ConfigError
from framework.utils.seeding import generator

DM = registry.find("data", "random-camera-datamodule")


def _dm(**cfg):
    base = {"height": 3, "width": 3, "batch_size": 64, "eval_height": 4, "eval_width": 6}
    base.update(cfg)
    return DM(base, seed=7)


def test_defaults_are_prolificdreamer_stage_one():
    cfg = DM().cfg
    assert (cfg.height, cfg.width, cfg.batch_size, cfg.resolution_milestones) == ([64, 512], [64, 512], [1, 1], [5000])
    assert cfg.camera_distance_range == (1.0, 1.5) and cfg.fovy_range == (40.0, 70.0)
    assert cfg.elevation_range == (-10.0, 45.0)
    assert (cfg.camera_perturb, cfg.center_perturb, cfg.up_perturb) == (0.0, 0.0, 0.0)
    assert (cfg.eval_camera_distance, cfg.eval_fovy_deg, cfg.n_test_views) == (1.5, 70.0, 120)


@pytest.mark.parametrize(
    "cfg",
    [
        {"height": [8, 16], "width": [8, 16, 32]},
        {"height": [8, 16], "width": [8, 16], "resolution_milestones": []},
        {"height": [8, 16], "width": [8, 16], "resolution_milestones": [10, 20]},
        {"elevation_range": [30, 10]},
        {"elevation_range": [-100, 10]},
        {"light_sample_strategy": "sun"},
        {"heigth": 64},
    ],
)
def test_config_errors(cfg):
    with pytest.raises(ConfigError):
        DM(cfg)


def test_progressive_resolution_follows_the_batch_index():
    dm = DM({"height": [4, 8], "width": [5, 10], "batch_size": [2, 3], "resolution_milestones": [10]})
    for index, (h, w, b) in [(0, (4, 5, 2)), (9, (4, 5, 2)), (10, (8, 10, 3)), (1000, (8, 10, 3))]:
        batch = dm.sample_train(index, generator(0, 0, index))
        assert (batch["height"], batch["width"]) == (h, w)
        assert batch["rays_o"].shape == (b, h, w, 3) and batch["c2w"].shape == (b, 4, 4)
        assert batch["mvp_mtx"].shape == (b, 4, 4) and batch["light_positions"].shape == (b, 3)
        for key in ("elevation", "azimuth", "camera_distances", "fovy"):
            assert batch[key].shape == (b,)


def test_batches_depend_only_on_the_generator():
    dm = _dm()
    a = dm.sample_train(5, generator(1, 0, 5))
    b = dm.sample_train(5, generator(1, 0, 5))
    c = dm.sample_train(5, generator(1, 1, 5))
    for key in ("rays_o", "rays_d", "light_positions", "elevation", "azimuth"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["azimuth"], c["azimuth"])


def test_train_dataloader_draws_batch_i_from_seed_rank_and_i():
    dm = _dm(batch_size=2)
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    for index in range(2):
        expected = dm.sample_train(index, generator(7, 0, index))
        assert torch.equal(next(it)["rays_d"], expected["rays_d"])


def test_ranges_and_geometry_of_sampled_cameras():
    dm = _dm(
        elevation_range=[-10, 45], azimuth_range=[-90, 90], camera_distance_range=[1.0, 1.5], fovy_range=[40, 70]
    )
    for index in range(8):  # both elevation strategies occur
        batch = dm.sample_train(index, generator(3, 0, index))
        e, a, d = batch["elevation"], batch["azimuth"], batch["camera_distances"]
        assert ((e >= -10 - 1e-4) & (e <= 45 + 1e-4)).all()
        assert ((a >= -90) & (a <= 90)).all()
        assert ((d >= 1.0) & (d <= 1.5)).all()
        fovy = torch.rad2deg(batch["fovy"])
        assert ((fovy >= 40 - 1e-4) & (fovy <= 70 + 1e-4)).all()
        # no perturbation: the camera sits at its spherical coordinates and the center pixel looks at the origin
        assert torch.allclose(batch["camera_positions"], spherical_to_cartesian(e, a, d), atol=1e-5)
        assert torch.allclose(batch["rays_d"][:, 1, 1], F.normalize(-batch["camera_positions"], dim=-1), atol=1e-5)
        # batch-uniform azimuth: the k-th camera's azimuth lies in the k-th of 64 equal bins
        k = torch.arange(64)
        assert ((a >= -90 + k * 180 / 64 - 1e-4) & (a <= -90 + (k + 1) * 180 / 64 + 1e-4)).all()


def test_camera_perturbation_is_bounded():
    dm = _dm(camera_perturb=0.1, center_perturb=0.2, up_perturb=0.02)
    batch = dm.sample_train(0, generator(0, 0, 0))
    unperturbed = spherical_to_cartesian(batch["elevation"], batch["azimuth"], batch["camera_distances"])
    offset = (batch["camera_positions"] - unperturbed).abs()
    assert (offset <= 0.1 + 1e-6).all() and offset.max() > 0.05


@pytest.mark.parametrize("strategy", ["dreamfusion", "magic3d"])
def test_light_positions(strategy):
    dm = _dm(light_sample_strategy=strategy, light_distance_range=[0.8, 1.5])
    batch = dm.sample_train(0, generator(0, 0, 0))
    light = batch["light_positions"]
    dist = light.norm(dim=-1)
    assert ((dist >= 0.8 - 1e-5) & (dist <= 1.5 + 1e-5)).all()
    cos = (F.normalize(light, dim=-1) * F.normalize(batch["camera_positions"], dim=-1)).sum(-1)
    if strategy == "magic3d":
        # elevation 30-90 degrees above the plane facing the camera: within 60 degrees of the camera direction
        assert (cos >= math.cos(math.radians(60)) - 1e-5).all()
    else:
        assert cos.mean() > 0.3  # around the camera direction


def test_progressive_view_starts_at_the_front_view():
    dm = _dm(progressive_until=100, eval_elevation_deg=15.0)
    first = dm.sample_train(0, generator(0, 0, 0))
    assert torch.allclose(first["elevation"], torch.full((64,), 15.0), atol=1e-4)
    assert torch.allclose(first["azimuth"], torch.zeros(64))
    half = dm.sample_train(50, generator(0, 0, 50))
    assert half["azimuth"].abs().max() <= 90.0 + 1e-4
    assert (half["elevation"] >= (15 - 10) / 2 - 1e-4).all() and (half["elevation"] <= (15 + 45) / 2 + 1e-4).all()


def test_orbit_datasets():
    dm = _dm(n_val_views=4, n_test_views=6, eval_elevation_deg=30.0, eval_camera_distance=2.0, eval_fovy_deg=45.0)
    val, test = dm.val_dataset(), dm.test_dataset()
    assert (len(val), len(test)) == (4, 6)
    azimuths = torch.cat([test[i]["azimuth"] for i in range(6)])
    assert torch.allclose(azimuths, torch.arange(6) * 60.0)
    item = test[1]
    assert item["rays_o"].shape == (1, 4, 6, 3) and (item["height"], item["width"]) == (4, 6)
    assert item["index"] == 1
    expected = 2.0 * torch.tensor(
        [math.cos(math.radians(30)) * math.cos(math.radians(60)), math.cos(math.radians(30)) * math.sin(math.radians(60)), 0.5]
    )
    assert torch.allclose(item["camera_positions"][0], expected, atol=1e-5)
    assert torch.allclose(item["light_positions"], item["camera_positions"])
    assert torch.rad2deg(item["fovy"]).item() == pytest.approx(45.0)
    loader_batch = next(iter(dm.val_dataloader()))
    assert loader_batch["rays_d"].shape == (1, 4, 6, 3)
    with pytest.raises(IndexError):
        test[6]
