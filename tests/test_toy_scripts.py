"""The toy scripts: their user errors (one line on stderr, exit status 2, nothing destroyed) and their options."""

import importlib.util
import sys
from pathlib import Path

import pytest

import launch

REPO = Path(__file__).resolve().parent.parent
SMALL = ["trainer.max_steps=1", "trainer.val_check_interval=1", "checkpoint.every_n_train_steps=1",
         "use_timestamp=false", "tag=t"]
SMALL_3D = ["data.height=16", "data.width=16", "data.eval_height=16", "data.eval_width=16", "data.n_val_views=1",
            "data.n_test_views=2", "system.renderer.num_samples_per_ray=8"]


def script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "scripts"))
    spec.loader.exec_module(module)
    return module


def one_error_line(capfd, *words):
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1, err
    assert not any("Traceback" in line for line in err), err
    for w in words:
        assert w in errors[0], errors[0]


def train(config, tmp_path, monkeypatch, *extra):
    monkeypatch.chdir(REPO)
    assert launch.main(["--config", config, "--train", f"exp_root_dir={tmp_path}", *SMALL, *extra,
                        f"system.prompt_processor.cache_dir={tmp_path / 'emb'}"]) == 0
    (trial,) = [p for p in tmp_path.rglob("t") if p.is_dir() and (p / "ckpts").is_dir()]
    return trial


def test_training_refuses_to_replace_a_folder_that_is_not_a_model(tmp_path, capfd):
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    assert script("train_toy_prior").main(["--quick", "--out", str(tmp_path), "--work", str(tmp_path / "w")]) == 2
    one_error_line(capfd, "--out", "model_index.json")
    assert keep.read_text() == "mine"
    assert script("train_toy_prior").main(["--quick", "--out", str(tmp_path / "o"), "--work", str(keep)]) == 2
    one_error_line(capfd, "--work", "is a file")
    assert keep.read_text() == "mine" and not (tmp_path / "o").exists()


def test_open_stage_needs_a_model_folder_and_shares_that_sum_to_one(tmp_path, capfd):
    assert script("train_toy_prior").main(["--quick", "--from-model", str(tmp_path / "nothing"),
                                           "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w")]) == 2
    one_error_line(capfd, "--from-model", "model_index.json")
    assert script("train_toy_prior").main(["--quick", "--open-steps", "5", "--open-shares", "0.5", "0.5", "0.5", "0",
                                           "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w")]) == 2
    one_error_line(capfd, "--open-shares", "sum to 1")
    for argv, words in ((["--open-steps", "-1"], ("--open-steps -1",)),
                        (["--open-steps", "5", "--open-lr", "nan"], ("--open-lr nan",)),
                        (["--open-steps", "5", "--open-t-min", "1000"], ("--open-t-min 1000", "0 to 999")),
                        (["--open-steps", "5", "--open-t-min", "-1"], ("--open-t-min -1", "0 to 999")),
                        (["--open-t-min", "500"], ("--open-t-min", "--open-steps N")),
                        (["--from-model", "load/toy-sd"], ("--from-model", "--open-steps N"))):
        assert script("train_toy_prior").main(["--quick", *argv, "--out", str(tmp_path / "o"),
                                               "--work", str(tmp_path / "w")]) == 2
        one_error_line(capfd, *words)
    assert not (tmp_path / "o").exists() and not (tmp_path / "w").exists()


def test_sampling_needs_a_model_folder(tmp_path, capfd):
    assert script("sample_toy_prior").main(["--model", str(tmp_path / "nothing")]) == 2
    one_error_line(capfd, "--model", "model_index.json")


def test_saturation_needs_full_prompts(capfd):
    assert script("sample_toy_prior").main(["--samples", "0", "--open-samples", "0",
                                            "--saturation-prompts", "a green cone", "a cube"]) == 2
    one_error_line(capfd, "--saturation-prompts", "'a cube'", "one colour and one shape")


def test_saturation_row_of_the_prior(capfd):
    """The ground truth's column is the renders' foreground saturation; green (0.12, 0.70, 0.15) lit by the toy's
    lights keeps its hue, so its HSV saturation is (0.70 - 0.12) / 0.70 = 0.83 wherever no background blends in: the
    mean over whole silhouettes (anti-aliased edges included) lies a little below that."""
    assert script("sample_toy_prior").main(["--samples", "0", "--open-samples", "0", "--saturation-prompts",
                                            "a green cone", "--saturation-samples", "3", "--steps", "2"]) == 0
    (row,) = [line for line in capfd.readouterr().out.splitlines() if line.startswith("| a green cone")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "7.5" and cells[4].endswith("/3")
    samples, truth = float(cells[2]), float(cells[3])
    assert 0.0 <= samples <= 1.0
    assert 0.6 < truth <= (0.70 - 0.12) / 0.70 + 1e-3


def test_open_prompt_table_ends_with_the_mean_distance_from_uniform(capfd):
    """Two open prompts, four samples each: each row's TV is half the L1 distance of its histogram (plus the unjudged
    share) from uniform, recomputed here from the printed counts, and the last row is their mean."""
    assert script("sample_toy_prior").main(["--samples", "0", "--open-samples", "4", "--open-prompts", "a cube",
                                            "a red object", "--steps", "2"]) == 0
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in capfd.readouterr().out.splitlines()
            if line.startswith(("| a cube", "| a red object", "| mean of"))]
    assert [r[0] for r in rows] == ["a cube", "a red object", "mean of the 2"]
    tvs = []
    for row in rows[:2]:
        counts = {name: int(n) for name, n in (item.rsplit(" ", 1) for item in row[2].split(", "))}
        others = counts.pop("other", 0)
        tvs.append(0.5 * sum(abs(n / 4 - 1 / 6) for n in counts.values()) + 0.5 * others / 4)
        assert float(row[4]) == pytest.approx(tvs[-1], abs=5e-4)
    assert float(rows[2][4]) == pytest.approx(sum(tvs) / 2, abs=1e-3)


def test_evaluation_of_a_folder_that_is_not_a_trial(tmp_path, capfd):
    assert script("evaluate_toy").main([str(tmp_path)]) == 2
    one_error_line(capfd, "not a trial folder")


def test_evaluation_refuses_a_view_count_below_one(tmp_path, capfd):
    with pytest.raises(SystemExit) as e:
        script("evaluate_toy").main([str(tmp_path), "--views", "0"])
    assert e.value.code == 2
    errors = [line for line in capfd.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].endswith("error: argument --views: '0' is not a whole number of at least 1")


def test_evaluation_of_a_prompt_outside_the_toy_vocabulary_and_of_a_missing_checkpoint(tmp_path, monkeypatch, capfd):
    trial = train("configs/toy/vsd.yaml", tmp_path, monkeypatch, "system.prompt_processor.prompt=a hamburger",
                  *SMALL_3D)
    capfd.readouterr()
    evaluate = script("evaluate_toy")
    assert evaluate.main([str(trial)]) == 2
    one_error_line(capfd, "a hamburger", "toy shape")
    assert evaluate.main([str(trial), "--ckpt", str(tmp_path / "missing.ckpt")]) == 2
    one_error_line(capfd, "--ckpt", "missing.ckpt")


def test_evaluation_with_the_scale_search(tmp_path, monkeypatch, capfd):
    """``--scale-search`` adds two columns; with every orbit view in the search (2 here), scale 1 is one of the
    candidates, so the best-scale IoU is at least the plain one."""
    from lab.toy.evaluate import SCALES

    trial = train("configs/toy/vsd.yaml", tmp_path, monkeypatch, "system.prompt_processor.prompt=a red cube",
                  *SMALL_3D)
    capfd.readouterr()
    assert script("evaluate_toy").main([str(trial), "--scale-search"]) == 0
    header, rule, row = capfd.readouterr().out.strip().splitlines()
    assert header.endswith("| IoU at best scale | best scale |") and rule.count("---") == 10
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 10
    iou, scaled, scale = float(cells[2]), float(cells[8]), float(cells[9])
    assert scaled >= iou and scale in SCALES


def test_evaluation_of_an_image_trial(tmp_path, monkeypatch, capfd):
    trial = train("configs/toy/vsd-image.yaml", tmp_path, monkeypatch, "system.height=32", "system.width=32",
                  "system.n_particles=1")
    capfd.readouterr()
    assert script("evaluate_toy").main([str(trial)]) == 2
    one_error_line(capfd, "text-to-image-system", "text-to-3D")


def test_ambiguity_3d_trains_and_prints_only_the_methods_asked_for(tmp_path, monkeypatch, capfd):
    """``--methods sds`` trains the four SDS seeds and no VSD run; a later run with both methods would train only
    what is missing (here a one-step toy at 16x16, scored on 2 views)."""
    monkeypatch.chdir(REPO)
    small = [o for o in SMALL_3D if not o.startswith("data.n_test_views")] + ["data.n_val_views=1"]
    rc = script("toy_studies").main(["--out", str(tmp_path), "ambiguity-3d", "--steps-per-particle", "2",
                                     "--views", "2", *small, f"system.prompt_processor.cache_dir={tmp_path / 'emb'}",
                                     "--methods", "sds"])
    assert rc == 0
    out = capfd.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| SDS")]
    assert len(rows) == 5 and not any(line.startswith("| VSD") for line in out.splitlines())
    runs = sorted(p.name for p in (tmp_path / "ambiguity-3d").iterdir())
    assert runs == [f"sds-20-a_cube-s{k}" for k in range(4)]
