"""More rows of docs/bad-inputs.md, by class: nonsense and non-finite values, image targets, paths that would hang or
that the OS refuses, damaged checkpoints, resumes that disagree with their config, interpolations that explode, and
model files that do not fit. Each row runs through ``launch.main`` like those of tests/test_bad_inputs.py (exit 2,
one ``error:`` line holding the documented words, no traceback, nothing left behind) and registers its id in the same
table, which the docs test compares with the page.
"""

import json
import os
import shutil

import numpy as np
import pytest
import torch

import launch
import re

from tests.test_bad_inputs import FAST, IMAGE, ROWS, SD, Row, check, one_error_line, rows

def fill(items, files):
    """``{name}`` replaced by the path of that file (other braces, such as YAML flow mappings, are kept)."""
    return [re.sub(r"\{(\w+)\}", lambda m: str(files.get(m.group(1), m.group(0))), s) for s in items]


LONG = "/tmp/" + "x" * 300  # one path component longer than any file system allows (255)

VALUES = rows(
    Row("value-nan-guidance-scale", [*SD, "system.prompt_processor.prompt=a cat", "system.guidance.guidance_scale=.nan"],
        "config error: system.guidance.guidance_scale: must be a number, got nan; set a finite number"),
    Row("value-inf-learning-rate", [*IMAGE, "system.optimizer.args.lr=.inf"],
        "config error: system.optimizer.args.lr: must be a finite number, got inf; set a finite number"),
    Row("value-nan-trainer", [*IMAGE, "trainer.gradient_clip_val=.nan"],
        "config error: trainer.gradient_clip_val: must be a finite number, got nan; set a finite number"),
    Row("value-nan-schedule", [*IMAGE, "system.loss.lambda_mse=[0,.nan,1.0,10]"],
        "config error: system.loss.lambda_mse: schedule values must be finite numbers, got nan"),
    Row("value-negative-radius", [*SD, "system.prompt_processor.prompt=a cat", "system.geometry.radius=-1"],
        "config error: system.geometry.radius: must be > 0, got -1.0; set a number > 0"),
    Row("value-zero-mlp-width",
        [*SD, "system.prompt_processor.prompt=a cat", "system.geometry.mlp_network_config.n_neurons=0"],
        "config error: system.geometry.mlp_network_config.n_neurons: must be in [1, 16384], got 0"),
    Row("value-camera-distance-zero", [*SD, "system.prompt_processor.prompt=a cat", "data.camera_distance_range=[0,0]"],
        "config error: data.camera_distance_range[0]: must be > 0, got 0.0; set a number > 0"),
    Row("value-renderer-grid-resolution",
        [*SD, "system.prompt_processor.prompt=a cat", "system.renderer.grid_resolution=0"],
        "config error: system.renderer.grid_resolution: must be in [1, 1024], got 0"),
    Row("value-eval-height", [*SD, "system.prompt_processor.prompt=a cat", "data.eval_height=0"],
        "config error: data.eval_height: must be in [1, 8192], got 0; set an integer in [1, 8192]"),
    Row("value-hash-grid-levels",
        [*SD, "system.prompt_processor.prompt=a cat", "system.geometry.pos_encoding_config.n_levels=0"],
        "config error: system.geometry.pos_encoding_config.n_levels: must be in [1, 32], got 0"),
    Row("value-hash-grid-finest",
        [*SD, "system.prompt_processor.prompt=a cat", "system.geometry.pos_encoding_config.per_level_scale=1e7"],
        "config error: system.geometry.pos_encoding_config.per_level_scale: the finest level would have"),
    Row("value-image-size-huge", [*SD, "system.prompt_processor.prompt=a cat", "data.height=100000"],
        "config error: data.height: must be in [1, 8192], got 100000; set an integer in [1, 8192]"),
    Row("value-rays-per-batch-huge",
        [*SD, "system.prompt_processor.prompt=a cat", "data.batch_size=4096", "data.height=4096", "data.width=4096"],
        "config error: data.batch_size: 4096 cameras of 4096x4096 are 68719476736 rays per step, more than 67108864"),
    Row("value-seed-huge", [*IMAGE, "seed=99999999999999999999"],
        "config error: seed: must be in [0, 4294966271], got 99999999999999999999"),
    Row("value-seed-negative", [*IMAGE, "seed=-1"], "config error: seed: must be in [0, 4294966271], got -1"),
    Row("value-max-steps-unbounded", [*IMAGE, "trainer.max_steps=-1"],
        "config error: trainer.max_steps: must be >= 1, got -1; set an integer >= 1"),
    Row("value-trainer-val-interval-zero", [*IMAGE, "trainer.val_check_interval=0"],
        "config error: trainer.val_check_interval: must be > 0, got 0; set an integer > 0"),
    Row("value-trainer-clip-negative", [*IMAGE, "trainer.gradient_clip_val=-1"],
        "config error: trainer.gradient_clip_val: must be >= 0, got -1; set an integer >= 0"),
    Row("value-inf-loss-weight", [*IMAGE, "system.loss.lambda_mse=.inf"],
        "config error: system.loss.lambda_mse: schedule values must be finite numbers, got inf"),
    Row("value-near-beyond-far",
        [*SD, "system.prompt_processor.prompt=a cat", "system.renderer.near_plane=5", "system.renderer.far_plane=1"],
        "config error: system.renderer.near_plane: 5.0 is not below far_plane (1.0); set near_plane < far_plane"),
)

RUNS = rows(
    Row("cfg-loss-weights-all-zero", [*IMAGE, "trainer.max_steps=10", "system.loss.lambda_mse=[5,1.0,0.0,6]",
                                      "system.loss.lambda_l1=0"],
        "config error: system.loss: every loss weight is zero at step 6 (losses: mse); nothing would train from "
        "there", False),
)

INTERPOLATIONS = rows(
    Row("cfg-interpolation-explodes", ["--config", "{chain_yaml}", "--train"],
        "config error: x16: its interpolations would expand to about"),
    Row("cfg-resolver-division-by-zero", [*IMAGE, "name=${div:1,0}"],
        "config error: name: ValueError raised while resolving interpolation: div: division by zero (1 / 0)"),
    Row("cfg-resolver-not-a-number", [*IMAGE, "name=${mul:abc,1000000000}"],
        "config error: name: ValueError raised while resolving interpolation: expected a number, got 'abc'"),
)

FILES = rows(
    Row("image-float-out-of-range", [*IMAGE, "data.image_path={float_tiff}"],
        "holds floating-point values outside [0, 1] (or NaN/Inf); save it as an 8- or 16-bit image"),
    Row("image-animation", [*IMAGE, "data.image_path={gif}"],
        "has shape (3, 8, 8, 3); expected one image with 1 to 4 channels"),
    Row("path-image-fifo", [*IMAGE, "data.image_path={fifo}"],
        "config error: data.image_path: the file '{fifo}' is a FIFO (named pipe), not a file"),
    Row("path-config-fifo", ["--config", "{fifo}", "--train"],
        "config file '{fifo}' is a FIFO (named pipe), not a file; give a YAML file"),
    Row("ckpt-fifo", [*IMAGE, "resume={fifo}"], "resume '{fifo}' is a FIFO (named pipe), not a checkpoint file"),
    Row("weights-fifo", [*IMAGE, "system.weights={fifo}"], "system.weights '{fifo}' is a FIFO (named pipe)"),
    Row("out-checkpoint-filename", [*IMAGE, "checkpoint.filename=../../x"],
        "config error: checkpoint.filename: '../../x' would write outside the trial's ckpts/ folder; give a name "
        "inside it, e.g. '{epoch}-{step}'"),
    Row("out-checkpoint-filename-absolute", [*IMAGE, "checkpoint.filename=/tmp/x"],
        "config error: checkpoint.filename: '/tmp/x' would write outside the trial's ckpts/ folder"),
    Row("path-too-long-resume", [*IMAGE, f"resume={LONG}"], "cannot be used: the path is too long for the file system"),
    Row("path-too-long-config", ["--config", LONG, "--train"],
        "cannot be used: the path is too long for the file system"),
    Row("path-too-long-image", [*IMAGE, f"data.image_path={LONG}.png"],
        "cannot be used: the path is too long for the file system"),
    Row("path-too-long-exp-root", [*IMAGE, f"exp_root_dir={LONG}"],
        "cannot be used: the path is too long for the file system"),
)

DAMAGED = rows(
    Row("ckpt-field-global-step", [*IMAGE, "resume={step_text}"],
        "is damaged: 'global_step' is str 'abc', not an integer; use another checkpoint of the run"),
    Row("ckpt-field-framework", [*IMAGE, "resume={framework_text}"],
        "is damaged: 'framework' is str 'x', not a mapping"),
    Row("ckpt-field-weights", [*IMAGE, "resume={weight_list}"],
        "is damaged: the weights hold values that are not tensors at [field.grid] (1)"),
    Row("ckpt-field-optimizer", [*IMAGE, "resume={optimizer_number}"],
        "is damaged: 'optimizer_states[0]' is not an optimizer state"),
    Row("ckpt-field-test", ["--config", "image-fitting.yaml", "--test", *FAST, "resume={step_text}"],
        "is damaged: 'global_step' is str 'abc', not an integer"),
    Row("weights-field", [*IMAGE, "system.weights={weight_list}"],
        "system.weights '{weight_list}' is damaged: the weights hold values that are not tensors"),
    Row("ckpt-optimizer-group-names", [*IMAGE, "resume={renamed_group}", "trainer.max_steps=4"],
        "was saved with optimizer parameter groups field.grid (1), background (4), this config makes field.grid (1), "
        "field.network (4)"),
    Row("ckpt-optimizer-state-shape", [*IMAGE, "resume={state_shape}", "trainer.max_steps=4"],
        "the optimizer's exp_avg of a parameter of group 'field.grid' has shape (1, 8, 4, 4), the parameter "
        "(1, 8, 32, 32)"),
    Row("ckpt-optimizer-state-nonfinite", [*IMAGE, "resume={state_nan}", "trainer.max_steps=4"],
        "the optimizer state (exp_avg) holds NaN or Inf; use a checkpoint saved before the run diverged"),
    Row("ckpt-past-max-steps", [*IMAGE, "resume={good}", "trainer.max_steps=2"],
        "is at step 2, which is not below trainer.max_steps (2): there is nothing left to train; raise "
        "trainer.max_steps to continue"),
    Row("ckpt-optimizer-changed", [*IMAGE, "resume={good}", "trainer.max_steps=4", "system.optimizer.name=SGD"],
        "was trained with the optimizer Adam, this config uses SGD (system.optimizer.name), whose state cannot "
        "continue Adam's"),
    Row("ckpt-scheduler-argument-changed",
        [*IMAGE, "resume={with_scheduler}", "+system.scheduler.name=StepLR", "+system.scheduler.args.step_size=20",
         "trainer.max_steps=4"],
        "system.scheduler.args.step_size is 20 but the run was trained with 10, and the scheduler's saved state "
        "would keep 10"),
    Row("ckpt-lr-under-scheduler",
        [*IMAGE, "resume={with_scheduler}", "+system.scheduler.name=StepLR", "+system.scheduler.args.step_size=10",
         "trainer.max_steps=4", "system.optimizer.params={field.grid: {lr: 0.5}}"],
        "parameter group 'field.grid' was trained with lr 0.05 under system.scheduler, this config sets 0.5"),
)


@pytest.fixture(scope="module")
def v(tmp_path_factory):
    """Files for the rows: a good checkpoint (2 steps) and damaged variants, images, a FIFO, a YAML chain."""
    root = tmp_path_factory.mktemp("values")

    def train(tag, *extra):
        argv = ["--config", "image-fitting.yaml", "--train", "trainer.max_steps=2", *FAST[:-1], f"tag={tag}",
                f"exp_root_dir={root / 'runs'}", *extra]
        assert launch.main(argv) == 0
        return root / "runs" / "image-fitting" / tag / "ckpts" / "last.ckpt"

    files = {"good": train("good"),
             "with_scheduler": train("sched", "+system.scheduler.name=StepLR", "+system.scheduler.args.step_size=10")}
    good = torch.load(files["good"], weights_only=True)

    def save(name, obj):
        torch.save(obj, root / name)
        files[name] = root / name

    save("step_text", {**good, "global_step": "abc"})
    save("framework_text", {**good, "framework": "x"})
    save("weight_list", {**good, "state_dict": {**good["state_dict"], "field.grid": [1.0, 2.0]}})
    save("optimizer_number", {**good, "optimizer_states": [5]})
    opt = good["optimizer_states"][0]
    groups = [dict(g) for g in opt["param_groups"]]
    groups[1]["name"] = "background"
    save("renamed_group", {**good, "optimizer_states": [{**opt, "param_groups": groups}]})
    state = {k: dict(s) for k, s in opt["state"].items()}
    state[0]["exp_avg"] = torch.zeros(1, 8, 4, 4)
    save("state_shape", {**good, "optimizer_states": [{**opt, "state": state}]})
    state = {k: dict(s) for k, s in opt["state"].items()}
    state[0]["exp_avg"] = state[0]["exp_avg"].clone()
    state[0]["exp_avg"].view(-1)[0] = float("nan")
    save("state_nan", {**good, "optimizer_states": [{**opt, "state": state}]})

    import imageio.v3 as iio

    iio.imwrite(root / "float.tiff", np.full((8, 8, 3), 2.0, np.float32))
    files["float_tiff"] = root / "float.tiff"
    iio.imwrite(root / "anim.gif", np.arange(3, dtype=np.uint8)[:, None, None, None].repeat(8, 1).repeat(8, 2)
                .repeat(3, 3) * 100)
    files["gif"] = root / "anim.gif"
    os.mkfifo(root / "fifo")
    files["fifo"] = root / "fifo"
    chain = "name: t\nsystem_type: image-fitting-system\ndata_type: image-datamodule\nx0: aaaaaaaa\n"
    chain += "".join(f'x{i + 1}: "${{x{i}}}${{x{i}}}"\n' for i in range(40))
    (root / "chain.yaml").write_text(chain)
    files["chain_yaml"] = root / "chain.yaml"
    return {k: str(p) for k, p in files.items()}


@pytest.mark.parametrize("row", VALUES + RUNS + INTERPOLATIONS + FILES + DAMAGED)
def test_bad_value(row, v, tmp_path, capsys):
    check(fill(row.argv, v), fill([row.words], v)[0], tmp_path, capsys, row.leaves_nothing)


# ------------------------------------------------------------------------------------------------ model files
MODELS = rows(
    Row("model-scheduler-no-timesteps",
        [*SD, "system.prompt_processor.prompt=a cat", "system.guidance.pretrained_model_name_or_path={no_timesteps}"],
        "system.guidance.pretrained_model_name_or_path: the model's scheduler has num_train_timesteps 0"),
    Row("model-prompt-encoder-width",
        [*SD, "system.prompt_processor.prompt=a cat", "system.guidance.pretrained_model_name_or_path={wide_unet}"],
        "system.prompt_processor.pretrained_model_name_or_path: its text encoder gives 32-wide embeddings but the "
        "UNet of system.guidance.pretrained_model_name_or_path cross-attends to 48"),
    Row("model-lora-metadata", ["{vsd}", "system.guidance.lora_weights_path={bad_lora}"],
        "the adapter metadata unet.lora_alpha is 'abc', not a number; the file is damaged"),
)


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_sd):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from lab.models.tiny_sd import TINY_UNET

    root = tmp_path_factory.mktemp("models")
    no_timesteps = root / "no-timesteps"
    shutil.copytree(tiny_sd, no_timesteps)
    config = no_timesteps / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "num_train_timesteps": 0}))
    wide = root / "wide-unet"
    shutil.copytree(tiny_sd, wide)
    shutil.rmtree(wide / "unet")
    UNet2DConditionModel(**{**TINY_UNET, "cross_attention_dim": 48}).save_pretrained(wide / "unet")
    lora = root / "lora"
    lora.mkdir()
    meta = {"lora_adapter_metadata": json.dumps({"unet.r": 4, "unet.lora_alpha": "abc"})}
    save_file({"unet.x.lora_A.weight": torch.zeros(1, 1)}, str(lora / "pytorch_lora_weights.safetensors"), metadata=meta)
    return {"no_timesteps": str(no_timesteps), "wide_unet": str(wide), "bad_lora": str(lora)}


@pytest.mark.parametrize("row", MODELS)
def test_bad_model_file(row, models, tiny_sd, tiny_sd_v, tiny_embedding_cache, tmp_path, capsys):
    vsd = ["--config", "prolificdreamer.yaml", "--train", "trainer.max_steps=1", "use_timestamp=false", "tag=t",
           "system.prompt_processor.prompt=a cat", f"system.guidance.pretrained_model_name_or_path_lora={tiny_sd_v}",
           "system.geometry.pos_encoding_config.n_levels=2", "system.geometry.pos_encoding_config.log2_hashmap_size=10",
           "system.renderer.num_samples_per_ray=8", "data.width=16", "data.height=16"]
    argv = []
    for a in fill(row.argv, models):
        argv += vsd if a == "{vsd}" else [a]
    argv += [f"system.prompt_processor.cache_dir={tiny_embedding_cache}",
             *[f"system.{k}.pretrained_model_name_or_path={tiny_sd}" for k in ("prompt_processor", "guidance")
               if not any(a.startswith(f"system.{k}.pretrained_model_name_or_path=") for a in argv)]]
    check(argv, fill([row.words], models)[0], tmp_path, capsys)


ROWS["cfg-wandb-without-package"] = (
    "config error: system.loggers.wandb.enable: is true but the package wandb is not installed; install it "
    "(pip install wandb) or set system.loggers.wandb.enable=false"
)


def test_cfg_wandb_without_package(tmp_path, capsys, monkeypatch):
    from systems import loggers

    monkeypatch.setattr(loggers, "wandb_available", lambda: False)  # whether or not it is installed here
    check([*IMAGE, "+system.loggers.wandb.enable=true"], ROWS["cfg-wandb-without-package"], tmp_path, capsys)


# ------------------------------------------------------------------------------------------------ read correctly
def test_16_bit_and_grey_alpha_targets_are_read_by_their_sample_type(tmp_path):
    import imageio.v3 as iio

    from framework.data.image import load_image

    grey16 = np.full((4, 4), 32768, np.uint16)  # half of 65535 (not 32768 / 255, clipped)
    iio.imwrite(tmp_path / "g16.png", grey16)
    assert iio.imread(tmp_path / "g16.png").dtype == np.uint16
    torch.testing.assert_close(load_image(str(tmp_path / "g16.png"), 4, 4), torch.full((4, 4, 3), 32768 / 65535))
    rgb16 = np.zeros((4, 4, 3), np.uint16)
    rgb16[..., 0] = 65535
    rgb16[..., 1] = 257  # 257 / 65535 = 1 / 255
    iio.imwrite(tmp_path / "rgb16.tiff", rgb16)
    assert iio.imread(tmp_path / "rgb16.tiff").dtype == np.uint16
    img = load_image(str(tmp_path / "rgb16.tiff"), 4, 4)
    torch.testing.assert_close(img[..., 0], torch.ones(4, 4))
    torch.testing.assert_close(img[..., 1], torch.full((4, 4), 1 / 255))
    torch.testing.assert_close(img[..., 2], torch.zeros(4, 4))
    grey_alpha = np.stack([np.full((4, 4), 51, np.uint8), np.full((4, 4), 7, np.uint8)], -1)  # grey 0.2, alpha 7
    iio.imwrite(tmp_path / "la.png", grey_alpha)
    assert iio.imread(tmp_path / "la.png").shape == (4, 4, 2)
    torch.testing.assert_close(load_image(str(tmp_path / "la.png"), 4, 4), torch.full((4, 4, 3), 51 / 255))


def test_a_target_larger_than_the_read_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    import imageio.v3 as iio

    import framework.data.image as image
    from framework.errors import ConfigError

    iio.imwrite(tmp_path / "big.png", np.zeros((64, 64, 3), np.uint8))
    monkeypatch.setattr(image, "MAX_IMAGE_VALUES", 1000)
    monkeypatch.setattr(iio, "imread", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(ConfigError, match=r"data.image_path: '.*big.png' has shape \(64, 64, 3\), more than the 1000"):
        image.load_image(str(tmp_path / "big.png"), 8, 8)


# ------------------------------------------------------------------------------------------------ resume follows config
def test_resume_applies_the_configs_new_learning_rate(v, tmp_path, capsys):
    """A resumed run trains with the config's learning rate (the checkpoint's is replaced), says so in one note
    line, and its parsed.yaml records the rate it trained with."""
    argv = [*IMAGE, f"exp_root_dir={tmp_path}", f"resume={v['good']}", "trainer.max_steps=4", "tag=resumed",
            "system.optimizer.params={field.grid: {lr: 0.5}}"]
    assert launch.main(argv) == 0
    err = capsys.readouterr().err
    assert "note: resume: the config's optimizer values replace the checkpoint's (field.grid lr 0.05 -> 0.5)" in err
    trial = tmp_path / "image-fitting" / "resumed"
    groups = torch.load(trial / "ckpts" / "last.ckpt", weights_only=True)["optimizer_states"][0]["param_groups"]
    assert [(g["name"], g["lr"]) for g in groups] == [("field.grid", 0.5), ("field.network", 0.01)]
    from omegaconf import OmegaConf

    parsed = OmegaConf.load(trial / "configs" / "parsed.yaml")
    assert parsed.system.optimizer.params["field.grid"].lr == 0.5


def test_resume_with_the_same_config_changes_nothing(v, tmp_path, capsys):
    argv = [*IMAGE, f"exp_root_dir={tmp_path}", f"resume={v['good']}", "trainer.max_steps=3", "tag=same"]
    assert launch.main(argv) == 0
    assert "note: resume" not in capsys.readouterr().err


def test_resume_keeps_the_optimizer_implementation_the_checkpoint_was_saved_with(v, tmp_path, capsys):
    """A checkpoint saved with PyTorch's per-tensor loop (``fused: false``, as every checkpoint from before the fused
    default) resumes under the default config without a note and keeps the loop (its state was laid out for it);
    one saved with the fused step resumes under ``fused: false`` the same way, fused."""
    loop = [*IMAGE, f"exp_root_dir={tmp_path}", "trainer.max_steps=2", "tag=loop", "+system.optimizer.args.fused=false"]
    assert launch.main(loop) == 0
    saved = tmp_path / "image-fitting" / "loop" / "ckpts" / "last.ckpt"
    for ckpt, extra, fused in ((saved, [], False), (v["good"], ["+system.optimizer.args.fused=false"], True)):
        capsys.readouterr()
        tag = f"resumed-{fused}"
        argv = [*IMAGE, f"exp_root_dir={tmp_path}", f"resume={ckpt}", "trainer.max_steps=4", f"tag={tag}", *extra]
        assert launch.main(argv) == 0
        assert "note: resume" not in capsys.readouterr().err
        state = torch.load(tmp_path / "image-fitting" / tag / "ckpts" / "last.ckpt", weights_only=True)
        groups = state["optimizer_states"][0]["param_groups"]
        assert [bool(g["fused"]) for g in groups] == [fused] * len(groups)
        assert all(s["step"].item() == 4 for s in state["optimizer_states"][0]["state"].values())


def test_a_path_refused_by_the_os_inside_a_library_is_one_line(tmp_path, capsys, monkeypatch):
    """The launcher's last net for a too-long path met where no check names it: one line, exit 2."""
    import errno

    import framework.experiment

    def refuse(*args, **kwargs):
        raise OSError(errno.ENAMETOOLONG, "File name too long", LONG)

    monkeypatch.setattr(framework.experiment, "import_custom_modules", refuse)
    assert launch.main([*IMAGE, f"exp_root_dir={tmp_path}"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "the path '/tmp/xxxx" in line and "File name too long; give a shorter path" in line
    assert not any(tmp_path.iterdir())
