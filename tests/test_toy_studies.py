"""The 2D ambiguity study in CI (lab/toy/studies.py): "a cube" with 8 latent particles, VSD at CFG 7.5 against a
broken VSD whose LoRA never learns (learning rate 0).

Bounds (docs/toy.md, "Calibration", seed 0) sit between the working VSD and the broken variants. Measured: VSD's
particles take 4 colours (green 3, yellow 2, purple 2, orange 1), foreground saturation 0.58, spread 0.180, LoRA fit
0.74; with the LoRA's learning rate at 0 all 8 particles end grey (saturation 0.34) and the fit is exactly 1; with the
LoRA trained on pure noise all grey too (fit 1.20); SDS at CFG 20 puts 7 of 8 particles on one colour (spread 0.106).
"""

import pytest

from lab.toy.studies import BROKEN_2D, RULES_2D, Setting, run_2d

SETTING = Setting("a cube", n_particles=8, steps=500, seed=0)


@pytest.mark.slow
def test_vsd_particles_spread_over_colours_and_its_lora_fits_them(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    vsd = run_2d(RULES_2D["vsd"], SETTING, out)
    frozen = run_2d(BROKEN_2D["vsd-lora-lr0"], SETTING, out)
    assert vsd["distinct_colours"] >= 3, vsd["colours"]
    assert vsd["spread"] > 0.14, vsd
    assert vsd["lora_fit"] < 0.9, vsd
    assert frozen["lora_fit"] == pytest.approx(1.0, abs=1e-4), frozen
    assert frozen["distinct_colours"] <= 1, frozen["colours"]
    assert vsd["saturation"] > frozen["saturation"] + 0.1, (vsd, frozen)


def test_an_unfinished_run_folder_is_named_not_overwritten(tmp_path):
    from framework.errors import UserError
    from lab.toy.studies import train

    (tmp_path / "ambiguity-2d" / "vsd-a_cube-s0").mkdir(parents=True)
    with pytest.raises(UserError, match="vsd-a_cube-s0 holds an unfinished run.*delete that folder"):
        train(RULES_2D["vsd"], SETTING, tmp_path, "ambiguity-2d")


def test_the_vsd_runs_compared_with_sds_get_the_sds_recipes_scene_losses_and_schedule(tmp_path):
    import launch
    from framework.experiment import load_experiment
    from lab.toy.studies import REPO, SCHEDULE_KEYS, SDS_3D, SDS_RECIPE_SETTINGS, VSD_3D, shared_setting_overrides

    # loaded as launch.py loads a study's run
    launch.import_modules()
    _, vsd, _ = load_experiment(str(REPO / VSD_3D), list(SDS_RECIPE_SETTINGS))
    _, sds, _ = load_experiment(str(REPO / SDS_3D))
    shared = set(sds.system.loss) & set(vsd.system.loss)
    assert {"lambda_opaque", "lambda_sparsity", "lambda_z_variance"} <= shared
    for k in shared:
        assert vsd.system.loss[k] == sds.system.loss[k], k
    for k in SCHEDULE_KEYS:
        assert vsd.system.guidance[k] == sds.system.guidance[k], k
    # a weight the two recipes set differently, a weight only one of them sets, a schedule that differs
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("system:\n  loss:\n    lambda_vsd: 1.0\n    lambda_z_variance: 1000.0\n    lambda_sparsity: 1.0\n"
                 "  guidance:\n    min_step_percent: 0.02\n    max_step_percent: [600, 0.98, 0.5, 601]\n")
    b.write_text("system:\n  loss:\n    lambda_sds: 1.0\n    lambda_z_variance: 0.0\n    lambda_sparsity: 1.0\n"
                 "  guidance:\n    min_step_percent: 0.02\n    max_step_percent: [400, 0.98, 0.5, 401]\n")
    assert shared_setting_overrides(str(a), str(b)) == (
        "system.loss.lambda_z_variance=0.0", "system.guidance.max_step_percent=[400, 0.98, 0.5, 401]")


def test_the_3d_studies_anneal_every_rule_at_half_the_run():
    """The run-length anneal comes after the overrides that give VSD the SDS recipe's schedule (which anneals at step
    400 of 800): every 3D rule run for 200 steps anneals at step 100."""
    import launch
    from framework.experiment import load_experiment
    from lab.toy.guidance_rules import rules
    from lab.toy.studies import REPO

    launch.import_modules()
    prompt = "system.prompt_processor.prompt=a red cube"
    for key, rule in rules("3d", 200).items():
        if key == "sdi":  # SDI anneals t by its own schedule
            continue
        _, cfg, _ = load_experiment(str(REPO / rule.config), [prompt, *rule.overrides])
        assert list(cfg.system.guidance.max_step_percent) == [100, 0.98, 0.5, 101], key


@pytest.mark.parametrize("vsd_cfg", [7.5, 2.0])
def test_the_3d_ambiguity_study_anneals_vsd_at_half_its_run(monkeypatch, capsys, vsd_cfg):
    """The 3D ambiguity study's VSD (4 particles, 4 x 50 steps here) anneals at step 100 of 200, its SDS seeds at 25
    of 50, whatever the recipes anneal at; VSD runs at ``--vsd-cfg`` (its runs at 7.5 keep their folder name, those
    at another scale get their own), the SDS seeds at ``--sds-cfg`` whatever VSD's is."""
    import argparse

    import launch
    import lab.toy.studies as studies
    from framework.experiment import load_experiment

    monkeypatch.syspath_prepend(str(studies.REPO / "scripts"))
    from toy_studies import cmd_ambiguity_3d

    launch.import_modules()
    seen = []

    def record(rule, setting, out, study, n_views):
        seen.append((rule, setting))
        return {"particles": [], "seconds": 0.0, "trial": "unused"}

    monkeypatch.setattr(studies, "run_3d", record)
    monkeypatch.setattr(studies, "summarise_3d", lambda parts: {"distinct_colours": 0, "colours": [], "saturation": 0.0,
                                                                 "iou": 0.0, "colour_error": 0.0})
    args = argparse.Namespace(extra=[], steps_per_particle=50, methods=["vsd", "sds"], prompt="a cube", seed=0,
                              out="unused", views=2, sds_cfg=20.0, vsd_cfg=vsd_cfg, fit_late_from=100)
    assert cmd_ambiguity_3d(args) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "LoRA fit: no measurements in unused/csv_logs/metrics.csv"
    assert len(seen) == 5
    for rule, setting in seen:
        _, cfg, _ = load_experiment(str(studies.REPO / rule.config), [
            f"system.prompt_processor.prompt={setting.prompt}", *rule.overrides, f"trainer.max_steps={setting.steps}"])
        half = setting.steps // 2
        assert list(cfg.system.guidance.max_step_percent) == [half, 0.98, 0.5, half + 1], rule.key
        # diffusers' CFG for VSD; threestudio's s = CFG - 1 for the SDS config
        vsd = rule.config.endswith("vsd.yaml")
        assert cfg.system.guidance.guidance_scale == (vsd_cfg if vsd else 19.0), rule.key
    assert seen[0][0].key == ("vsd-4particles" if vsd_cfg == 7.5 else "vsd-2-4particles")


@pytest.mark.parametrize("argv, option, text", [
    (["ambiguity-3d", "--fit-late-from", "-1"], "--fit-late-from", "'-1' is not a whole number of at least 0"),
    (["ambiguity-3d", "--steps-per-particle", "0"], "--steps-per-particle", "'0' is not a whole number of at least 1"),
    (["panel", "--views", "ten"], "--views", "'ten' is not a whole number of at least 1"),
    (["--threads", "-2", "panel"], "--threads", "'-2' is not a whole number of at least 1"),
    (["calibration", "--particles", "2.5"], "--particles", "'2.5' is not a whole number of at least 1"),
])
def test_a_count_that_makes_no_sense_is_refused_before_any_run(capsys, tmp_path, argv, option, text):
    """A negative, zero or non-whole count on the study script's command line stops it with argparse's one error line,
    which names the option, before anything is trained or written."""
    from toy_studies import main

    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "out"), *argv])
    assert e.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].endswith(f"error: argument {option}: {text}"), errors
    assert not (tmp_path / "out").exists()
