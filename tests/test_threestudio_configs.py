"""threestudio's own configs (tests/fixtures/threestudio/, unchanged copies) run here as written: each trains a few
steps, tests and exports with only model paths and sizes overridden on the command line, as a threestudio user would
run it; and their values mean what they mean in threestudio (schedules, resolution milestones, coarse-to-fine
levels, the SDS guidance scale, the loggers block), checked against threestudio's formulas written out by hand.

To add a config: copy it unchanged into tests/fixtures/threestudio/ (with its row in the README there) and give it an
entry in ``OVERRIDES`` below.
"""

import hashlib
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

import launch
from framework import registry
from framework.experiment import load_experiment
from lab.small_recipes import overrides_between, shrink

REPO = Path(__file__).resolve().parent.parent
FOLDER = REPO / "tests" / "fixtures" / "threestudio"

OVERRIDES = {
    # file -> overrides it needs beyond model paths and sizes. "{last_ckpt:<file>}" stands for the last.ckpt of a
    # short run of <file> (for a stage that starts from the one before it, e.g.
    # "system.geometry_convert_from={last_ckpt:prolificdreamer.yaml}").
    "prolificdreamer.yaml": [],
    "dreamfusion-sd.yaml": [],
    "prolificdreamer-scene.yaml": [],
    "hifa.yaml": [],
    "prolificdreamer-hifa.yaml": [],
}
STEPS = 3
"""Training steps of each short run (a size: the run's length)."""
EXPORT = ["system.exporter_type=mesh-exporter", "system.geometry.isosurface_threshold=auto",
          "system.geometry.isosurface_resolution=32"]
"""The export command of threestudio's README (it sets the threshold the same way), at a small resolution."""
FILES = sorted(p.name for p in FOLDER.glob("*.yaml"))


def test_every_file_has_an_entry_and_is_unchanged():
    readme = (FOLDER / "README.md").read_text()
    assert sorted(OVERRIDES) == FILES
    for name in FILES:
        data = (FOLDER / name).read_bytes()
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's object id of the file
        row = re.search(rf"\| `{re.escape(name)}` \| `[^`]+` \| `([0-9a-f]{{40}})` \|", readme)
        assert row and row.group(1) == blob, f"{name} differs from threestudio's file ({blob})"


class Runs:
    """Short runs of the fixture configs, each made once per module (a later stage may start from an earlier one)."""

    def __init__(self, root: Path, tiny_sd: str, tiny_sd_v: str, cache: Path):
        self.root, self.tiny_sd, self.tiny_sd_v, self.cache = root, tiny_sd, tiny_sd_v, cache
        self.trials = {}

    def overrides(self, name: str) -> list:
        extra = [re.sub(r"\{last_ckpt:([^}]+)\}", lambda m: str(self.trial(m.group(1)) / "ckpts" / "last.ckpt"), o)
                 for o in OVERRIDES[name]]
        prompt = ["system.prompt_processor.prompt=a photo of a cat"]
        launch.import_modules()
        _, raw, _ = load_experiment(str(FOLDER / name), prompt + extra)
        full = OmegaConf.to_container(raw, resolve=True)
        small = shrink(full, self.tiny_sd, self.tiny_sd_v, self.cache, self.root / name)
        small["trainer"].update(max_steps=STEPS, val_check_interval=STEPS)
        small["checkpoint"]["every_n_train_steps"] = STEPS
        return prompt + extra + overrides_between(full, small)

    def trial(self, name: str) -> Path:
        if name not in self.trials:
            argv = ["--config", str(FOLDER / name), "--train", *self.overrides(name),
                    "trainer.enable_progress_bar=false"]
            assert launch.main(argv) == 0, name
            (trial,) = [p for p in (self.root / name).rglob("smoke") if p.is_dir()]
            self.trials[name] = trial
        return self.trials[name]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_sd, tiny_sd_v, tiny_embedding_cache):
    return Runs(tmp_path_factory.mktemp("threestudio"), tiny_sd, tiny_sd_v, tiny_embedding_cache)


@pytest.mark.parametrize("name", FILES)
def test_config_trains_tests_and_exports_as_written(name, runs, capsys):
    overrides = runs.overrides(name)
    changed = {o.split("=", 1)[0] for o in overrides}
    allowed = re.compile(r"(pretrained_model_name_or_path(_lora)?|prompt|cache_dir|height|width|batch_size|"
                         r"eval_height|eval_width|n_val_views|n_test_views|num_samples_per_ray|eval_chunk_size|"
                         r"log2_hashmap_size|max_steps|val_check_interval|every_n_train_steps|exp_root_dir|"
                         r"use_timestamp|tag)$")
    extra = {o.split("=", 1)[0] for o in OVERRIDES[name]}
    assert all(allowed.search(k.rsplit(".", 1)[-1]) or k in extra for k in changed), sorted(changed)

    trial = runs.trial(name)
    ckpt = torch.load(trial / "ckpts" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == STEPS
    assert list((trial / "save").glob(f"it{STEPS}-test/*.png")) and (trial / "save" / f"it{STEPS}-test.mp4").is_file()
    capsys.readouterr()
    argv = ["--config", str(trial / "configs" / "parsed.yaml"), "--export", f"resume={trial / 'ckpts' / 'last.ckpt'}",
            *EXPORT, f"exp_root_dir={trial.parent.parent / 'export'}"]
    assert launch.main(argv) == 0
    assert list((trial.parent.parent / "export").rglob(f"it{STEPS}-export/*.obj"))


# ------------------------------------------------------------------------------------------------ meanings
def threestudio_C(value, global_step):
    """threestudio's ``C`` (threestudio/utils/misc.py) for integer steps, written out."""
    if isinstance(value, (int, float)):
        return float(value)
    value = list(value)
    if len(value) == 3:
        value = [0] + value
    if len(value) >= 6:
        select = 3
        for i in range(3, len(value) - 2, 2):
            if global_step >= value[i]:
                select = i + 2
        if select != 3:
            start_value, start_step = value[select - 3], value[select - 2]
        else:
            start_step, start_value = value[:2]
        value = [start_step, start_value, value[select - 1], value[select]]
    start_step, start_value, end_value, end_step = value
    t = max(min(1.0, (global_step - start_step) / (end_step - start_step)), 0.0)
    return start_value + (end_value - start_value) * t


def parsed(name):
    launch.import_modules()
    exp, raw, _ = load_experiment(str(FOLDER / name), ["system.prompt_processor.prompt=a cat"])
    return exp, OmegaConf.to_container(raw, resolve=False)


STEPS_TO_CHECK = [0, 1, 1999, 2000, 2001, 2500, 4999, 5000, 5001, 5002, 9999, 10000, 10001, 10002, 24999]


@pytest.mark.parametrize("name", FILES)
def test_every_schedule_is_threestudios(name):
    exp, raw = parsed(name)
    for key, written in raw["system"]["loss"].items():
        for step in STEPS_TO_CHECK:
            assert exp.system.loss[key](step) == pytest.approx(threestudio_C(written, step)), (key, step)
    for key in ("min_step_percent", "max_step_percent"):
        written = raw["system"]["guidance"][key]
        for step in STEPS_TO_CHECK:
            assert getattr(exp.system.guidance, key)(step) == pytest.approx(threestudio_C(written, step)), (key, step)


def test_piecewise_schedule_of_six_values_is_threestudios():
    from framework.schedule import Schedule

    written = [0, 1.0, 0.5, 100, 2.0, 300]
    s = Schedule.parse(written)
    for step in (0, 50, 99, 100, 101, 200, 299, 300, 1000):
        assert s(step) == pytest.approx(threestudio_C(written, step)), step


@pytest.mark.parametrize("name", ["prolificdreamer.yaml", "prolificdreamer-scene.yaml"])
def test_resolution_milestones_switch_where_threestudio_switches(name):
    import bisect

    exp, raw = parsed(name)
    data = registry.find("data", exp.data_type)(exp.data)
    milestones = [-1] + raw["data"]["resolution_milestones"]  # threestudio's RandomCameraIterableDataset
    for step in (0, 4999, 5000, 5001, 20000):
        i = bisect.bisect_right(milestones, step) - 1
        assert data.resolution(step)[:2] == (raw["data"]["height"][i], raw["data"]["width"][i]), step


def test_dreamfusion_sd_means_threestudios_guidance_levels_and_shading():
    from framework.guidance.diffusion import classifier_free_guidance

    exp, raw = parsed("dreamfusion-sd.yaml")
    g = exp.system.guidance
    assert g.guidance_scale == 100.0
    # threestudio's SDS: eps = eps_text + guidance_scale * (eps_text - eps_uncond)
    eps_text, eps_uncond = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    cls = registry.find("guidance", exp.system.guidance_type)
    scale = cls.cfg_scale(SimpleNamespace(cfg=g))
    torch.testing.assert_close(classifier_free_guidance(eps_text, eps_uncond, scale),
                               eps_text + 100.0 * (eps_text - eps_uncond))

    # ProgressiveBandHashGrid: min(start_level + max(step - start_step, 0) // update_steps, n_levels)
    from framework.networks.hash_grid import HashGridEncoding

    pe = exp.system.geometry.pos_encoding_config
    w = raw["system"]["geometry"]["pos_encoding_config"]
    for step in (0, 1999, 2000, 2499, 2500, 5999, 6000, 9999):
        want = min(w["start_level"] + max(step - w["start_step"], 0) // w["update_steps"], w["n_levels"])
        assert HashGridEncoding.active_levels(SimpleNamespace(cfg=pe, n_levels=pe.n_levels), step) == want, step

    # diffuse-with-point-light: albedo only while global_step < ambient_only_steps (2001)
    material = registry.find("material", exp.system.material_type)(exp.system.material)
    for step, ambient_only in ((0, True), (2000, True), (2001, False)):
        material.update_step(0, step)
        assert material.ambient_only is ambient_only
    assert exp.trainer["precision"] == "16-mixed"


def test_scene_config_values():
    from framework.geometry.implicit_volume import ImplicitVolume

    exp, raw = parsed("prolificdreamer-scene.yaml")
    assert exp.system.guidance.view_dependent_prompting is False
    assert exp.data.camera_distance_range == (0.1, 2.3)
    geometry = exp.system.geometry
    points = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0]])
    # threestudio's blob_magic3d: scale * (1 - |p| / std), here with a negative scale (an empty scene to start from)
    want = -10.0 * (1 - points.norm(dim=-1, keepdim=True) / 2.5)
    torch.testing.assert_close(ImplicitVolume.density_bias(SimpleNamespace(cfg=geometry), points), want)


@pytest.mark.parametrize("name", FILES)
def test_loggers_block_is_accepted_with_its_meaning(name):
    exp, raw = parsed(name)
    written = raw["system"]["loggers"]["wandb"]
    assert exp.system.loggers.wandb.enable is written["enable"] is False
    assert (exp.system.loggers.wandb.project, exp.system.loggers.wandb.name) == (written["project"], written["name"])


def test_wandb_enabled_adds_lightnings_wandb_logger_inside_the_trial(monkeypatch, tmp_path):
    import pytorch_lightning.loggers

    from systems import loggers as module

    made = []

    class FakeWandbLogger:
        def __init__(self, **kwargs):
            made.append(kwargs)

    monkeypatch.setattr(module, "wandb_available", lambda: True)
    monkeypatch.setattr(pytorch_lightning.loggers, "WandbLogger", FakeWandbLogger)
    cfg = module.LoggersConfig(module.WandbConfig(enable=True, project="p", name="None"))
    (logger,) = module.extra_loggers(cfg, tmp_path / "trial")
    assert isinstance(logger, FakeWandbLogger)
    assert made == [{"project": "p", "name": "None", "save_dir": str(tmp_path / "trial")}]
    assert module.extra_loggers(module.LoggersConfig(), tmp_path) == []


def test_wandb_enabled_without_the_package_is_one_line(monkeypatch, tmp_path, capsys):
    from systems import loggers as module

    monkeypatch.setattr(module, "wandb_available", lambda: False)
    argv = ["--config", "image-fitting.yaml", "--train", f"exp_root_dir={tmp_path}", "trainer.max_steps=1",
            "+system.loggers.wandb.enable=true"]
    assert launch.main(argv) == 2
    err = capsys.readouterr().err
    assert ("error: config error: system.loggers.wandb.enable: is true but the package wandb is not installed; "
            "install it (pip install wandb) or set system.loggers.wandb.enable=false") in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name,loss", [("hifa.yaml", "sds"), ("prolificdreamer-hifa.yaml", "vsd")])
def test_hifa_configs_mean_threestudios_annealing_and_image_loss(name, loss, tiny_sd, tiny_embedding_cache):
    """sqrt_anneal: t = (max - min) (1 - sqrt(step / trainer_max_steps)) + min, one t per step, as threestudio's
    update_step; use_img_loss returns loss_<name>_img, which lambda_<name>_img (0.01) weights."""
    exp, raw = parsed(name)
    written = dict(raw["system"]["guidance"], pretrained_model_name_or_path=tiny_sd)
    if "pretrained_model_name_or_path_lora" in written:
        written["pretrained_model_name_or_path_lora"] = tiny_sd
    g = registry.find("guidance", exp.system.guidance_type)(written)
    assert g.cfg.use_img_loss and g.cfg.sqrt_anneal
    for step in (0, 1, 100, 6250, 12000, 24999, 25000):
        percentage = (float(step) / g.cfg.trainer_max_steps) ** 0.5
        lo, hi = threestudio_C(written["min_step_percent"], step), written["max_step_percent"]
        curr = (hi - lo) * (1 - percentage) + lo
        g.update_step(0, step)
        assert g.min_step == g.max_step == int(1000 * curr), step
    pu = registry.find("prompt_processor", "stable-diffusion-prompt-processor")(
        {"pretrained_model_name_or_path": tiny_sd, "prompt": "a cat", "cache_dir": str(tiny_embedding_cache)})()
    out = g(torch.rand(1, 32, 32, 3), pu, elevation=torch.zeros(1), azimuth=torch.zeros(1),
            camera_distances=torch.ones(1), c2w=torch.eye(4)[None])
    assert torch.isfinite(out[f"loss_{loss}_img"]) and out[f"loss_{loss}_img"] > 0
    weight = raw["system"]["loss"][f"lambda_{loss}_img"]
    assert exp.system.loss[f"lambda_{loss}_img"](0) == 0.01 == threestudio_C(weight, 0)
