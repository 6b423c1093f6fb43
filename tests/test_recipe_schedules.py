"""Every recipe's whole schedule, compressed into a short run (lab/compressed_schedule.py), trains, validates and
tests: every loss-weight change, timestep anneal, resolution milestone, hash-grid level, validation and checkpoint of
the full run happens here, in order. Recipes are found in configs/ (a recipe added later is covered without editing
this file); step-valued fields are found from their declared types, and a test fails when an integer field that
looks step-valued is not declared ``Step``/``Steps``.
"""

from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

import launch
from framework import registry
from framework.experiment import CONFIG_DIR, ExperimentConfig, load_experiment
from framework.schedule import Schedule
from lab.compressed_schedule import (
    StepMap,
    compress,
    config_dataclasses,
    step_values,
    undeclared_lightning_arguments,
    undeclared_step_fields,
)
from lab.small_recipes import shrink

REPO = Path(__file__).resolve().parent.parent
_FILES = sorted(CONFIG_DIR.rglob("*.yaml"))
RECIPES = [str(p.relative_to(CONFIG_DIR)) for p in _FILES
           if not (p.is_symlink() and p.resolve() in {q.resolve() for q in _FILES if not q.is_symlink()})]
"""Every recipe of configs/ once (vsd.yaml is a link to prolificdreamer.yaml)."""
LENGTH = 20
"""Steps of a compressed run (before distinct step numbers are pushed MIN_GAP apart)."""


def compressed_config(recipe: str, tiny_sd, tiny_sd_v, cache, root: Path) -> tuple:
    """(path of the compressed YAML, the full parsed config, the compressed parsed config, the step map)."""
    launch.import_modules()
    full, raw, _ = load_experiment(str(CONFIG_DIR / recipe), ["system.prompt_processor.prompt=a red cube"]
                                   if "prompt_processor" in (CONFIG_DIR / recipe).read_text() else [])
    container = OmegaConf.to_container(raw, resolve=True)
    prompt = "a red cube" if recipe.startswith("toy/") else "a photo of a cat"
    small = shrink(container, tiny_sd, tiny_sd_v, cache, root, prompt=prompt, repo_root=REPO)
    small_exp, _, _ = load_experiment(_write(root / "small.yaml", small))
    short, mapping = compress(small, small_exp, LENGTH)
    path = _write(root / "compressed.yaml", short)
    return path, full, load_experiment(path)[0], mapping


def _write(path: Path, container) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(container, sort_keys=False))
    return str(path)


# ------------------------------------------------------------------------------------------------ the map itself
def test_step_map_keeps_order_and_separates_every_distinct_step():
    m = StepMap([5000, 5001, 10000, 10001, 2000], max_steps=25000, length=20)
    steps = [0, 2000, 5000, 5001, 10000, 10001, 25000]
    mapped = [m.point(s) for s in steps]
    # by hand: round(s * 20 / 25000) = 0, 2, 4, 4, 8, 8, 20; pushed apart by MIN_GAP = 2: 0, 2, 4, 6, 8, 10, 20
    assert mapped == [0, 2, 4, 6, 8, 10, 20]
    assert m.length == 20 and m.duration(200) == 1 and m.duration(5000) == 4


def test_a_duration_that_divides_the_run_still_divides_the_short_run():
    # 300 steps, validation every 100: 20 * 100 / 300 = 6.7 would validate at 7 and 14, not at the end; the short
    # run becomes 21 steps with validations at 7, 14, 21 (by hand)
    m = StepMap([], max_steps=300, length=20, durations=[100, 300])
    assert (m.length, m.duration(100), m.duration(300)) == (21, 7, 21)
    # an interval shorter than a compressed step maps to every step and does not lengthen the run
    m = StepMap([5000], max_steps=25000, length=20, durations=[200, 25000])
    assert (m.length, m.duration(200), m.duration(25000), m.point(5000)) == (20, 1, 20, 4)


def test_compressed_schedule_is_the_same_function_of_the_mapped_step(tmp_path):
    launch.import_modules()
    full, raw, _ = load_experiment("prolificdreamer.yaml", ["system.prompt_processor.prompt=x"])
    short, m = compress(OmegaConf.to_container(raw, resolve=True), full, LENGTH)
    opaque = Schedule.parse(short["system"]["loss"]["lambda_opaque"])
    original = full.system.loss["lambda_opaque"]
    for step in (0, 5000, 10000, 10001, 24999):
        assert opaque(m.point(step) if step in m.table else round(step * m.scale)) == original(step)
    assert short["data"]["resolution_milestones"] == [m.point(5000)]
    assert short["trainer"]["max_steps"] == m.length
    assert short["checkpoint"]["every_n_train_steps"] == m.duration(25000)
    anneal = Schedule.parse(short["system"]["guidance"]["max_step_percent"])
    assert anneal(m.point(5000)) == 0.98 and anneal(m.point(5001)) == 0.5


def test_step_values_are_found_from_declared_types():
    launch.import_modules()
    full, _, _ = load_experiment("dreamfusion-sd.yaml", ["system.prompt_processor.prompt=x"])
    found = {v.key: v.kind for v in step_values(full)}
    for key, kind in {
        "system.geometry.pos_encoding_config.start_step": "point",
        "system.geometry.pos_encoding_config.update_steps": "duration",
        "system.material.ambient_only_steps": "point",
        "system.renderer.grid_update_interval": "duration",
        "system.renderer.grid_warmup_steps": "point",
        "system.loss.lambda_orient": "schedule",
        "system.guidance.max_step_percent": "schedule",
        "data.progressive_until": "point",
        "trainer.max_steps": "point",
        "trainer.val_check_interval": "duration",
        "checkpoint.every_n_train_steps": "duration",
    }.items():
        assert found.get(key) == kind, (key, found.get(key))


# ------------------------------------------------------------------------------------------------ declarations
def all_config_classes():
    launch.import_modules()
    roots = [ExperimentConfig] + [
        registry.find(kind, name).Config for kind in registry.KINDS for name in registry.names(kind)
    ]
    seen = []
    for root in roots:
        for cls in config_dataclasses(root):
            if cls not in seen:
                seen.append(cls)
    return seen


def test_every_step_valued_integer_field_is_declared():
    """A new module's ``foo_steps: int`` (or ``start_step``, ``milestones``, ``..._interval``) must be typed ``Step`` or
    ``Steps``, so that the compressed-schedule test maps it; this fails until it is."""
    classes = all_config_classes()
    assert len(classes) > 15
    bad = [f for cls in classes for f in undeclared_step_fields(cls)]
    assert bad == [], f"declare these step-valued fields Step or Steps (framework.config): {bad}"


def test_every_step_valued_lightning_argument_is_in_a_table():
    assert undeclared_lightning_arguments() == []


# ------------------------------------------------------------------------------------------------ the runs
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_runs_its_whole_schedule_compressed(recipe, tiny_sd, tiny_sd_v, tiny_embedding_cache, tmp_path,
                                                   monkeypatch):
    monkeypatch.chdir(REPO)  # recipes name repository paths (load/toy-sd)
    path, full, short, m = compressed_config(recipe, tiny_sd, tiny_sd_v, tiny_embedding_cache, tmp_path)
    assert launch.main(["--config", path, "--train", "trainer.enable_progress_bar=false",
                        "trainer.enable_model_summary=false"]) == 0
    (trial,) = [p for p in (tmp_path / "runs").rglob("smoke") if p.is_dir()] or [
        p for p in tmp_path.rglob("smoke") if p.is_dir()]
    steps = short.trainer["max_steps"]
    assert steps == m.length
    ckpt = torch.load(trial / "ckpts" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == steps

    # Every scheduled checkpoint and validation of the full run has its counterpart.
    every = short.checkpoint.get("every_n_train_steps")
    if every:
        saved = {int(p.stem.split("step=")[1]) for p in (trial / "ckpts").glob("epoch=*-step=*.ckpt")}
        assert saved == set(range(every, steps + 1, every)), saved
    interval = short.trainer.get("val_check_interval")
    if isinstance(interval, int):
        validated = {int(p.name[2:].split("-")[0]) for p in (trial / "save").glob("it*-val")}
        assert set(range(interval, steps + 1, interval)) <= validated, validated
    assert list((trial / "save").glob(f"it{steps}-test*"))

    # Every loss weight took, during training, each value its schedule takes at its own points in the full run.
    metrics = (trial / "csv_logs" / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in metrics[1:]]
    for name, schedule in full.system.loss.items():
        column = f"train/{name}"
        if column not in header:
            continue  # a weight of a loss the system does not compute (zero)
        logged = {float(r[column]) for r in rows if r.get(column)}
        wanted = {schedule(s) for s, _ in schedule.points if s < full.trainer["max_steps"]}
        wanted |= {schedule(full.trainer["max_steps"] - 1)}
        assert wanted <= {round(v, 6) for v in logged} | logged, (name, wanted, logged)


def test_a_loss_weight_crossing_zero_mid_run_does_not_stop_training(tmp_path):
    """The class of prolificdreamer.yaml's step-10001 crash: a weight that becomes non-zero (and one that becomes
    zero) mid-run keeps every logging call the same."""
    argv = ["--config", "image-fitting.yaml", "--train", f"exp_root_dir={tmp_path}", "use_timestamp=false", "tag=t",
            "trainer.max_steps=6", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
            "data.height=8", "data.width=8", "data.n_test_views=1",
            "system.loss.lambda_l1=[2,0.0,1.0,3]", "system.loss.lambda_mse=[3,1.0,0.0,4]"]
    assert launch.main(argv) == 0
    text = (tmp_path / "image-fitting" / "t" / "csv_logs" / "metrics.csv").read_text()
    assert "train/lambda_l1" in text


def test_every_weight_zero_at_some_step_fails_at_the_first_step(tmp_path, capsys):
    argv = ["--config", "image-fitting.yaml", "--train", f"exp_root_dir={tmp_path}", "use_timestamp=false", "tag=t",
            "trainer.max_steps=10", "trainer.enable_progress_bar=false", "data.height=8", "data.width=8",
            "system.loss.lambda_mse=[5,1.0,0.0,6]", "system.loss.lambda_l1=0"]
    assert launch.main(argv) == 2
    err = capsys.readouterr().err
    assert "config error: system.loss: every loss weight is zero at step 6" in err
    assert not list((tmp_path / "image-fitting" / "t" / "ckpts").glob("*.ckpt"))
