"""Every row of docs/bad-inputs.md, run through ``launch.main``: exit status 2 and one ``error:`` line on stderr that
holds the documented words, no traceback, and (unless the row says otherwise) no trial folder left behind.

``ROWS`` is the table: a test at the end checks that docs/bad-inputs.md lists exactly these ids, each with its words.
"""

import errno
import re
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch

import launch
from tests.conftest import REPO_ROOT

FAST = ["trainer.log_every_n_steps=1", "data.height=16", "data.width=16", "data.n_test_views=2", "data.batch_size=64",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "use_timestamp=false", "tag=t"]
IMAGE = ["--config", "image-fitting.yaml", "--train", "trainer.max_steps=2", *FAST]
# dreamfusion-sd shrunk to build in a second: the rows that need the text encoder or the diffusion model use it.
SD = ["--config", "dreamfusion-sd.yaml", "--train", "trainer.max_steps=1", "use_timestamp=false", "tag=t",
      "system.geometry.pos_encoding_config.n_levels=2", "system.geometry.pos_encoding_config.log2_hashmap_size=10",
      "system.renderer.num_samples_per_ray=8", "data.width=16", "data.height=16"]

Row = namedtuple("Row", "id argv words leaves_nothing", defaults=(True,))
ROWS = {}  # id -> the words its message holds (docs/bad-inputs.md must say the same)


def rows(*items):
    for r in items:
        assert r.id not in ROWS, r.id
        ROWS[r.id] = r.words
    return [pytest.param(r, id=r.id) for r in items]


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def check(argv, words, tmp_path, capsys, leaves_nothing=True):
    out = tmp_path / "out"
    code = launch.main([f"exp_root_dir={out}", *argv])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert words in line, line
    if leaves_nothing:
        assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))
    return line


# ------------------------------------------------------------------------------------------------ materials
@pytest.fixture(scope="module")
def m(tmp_path_factory):
    """Checkpoints and files, good and bad. ``m["good"]`` is a real image-fitting checkpoint (2 steps)."""
    root = tmp_path_factory.mktemp("materials")

    def train(tag, *extra):
        argv = ["--config", "image-fitting.yaml", "--train", "trainer.max_steps=2", *FAST[:-1], f"tag={tag}",
                f"exp_root_dir={root / 'runs'}", *extra]
        assert launch.main(argv) == 0
        return root / "runs" / "image-fitting" / tag / "ckpts" / "last.ckpt"

    files = {
        "good": train("good"),
        "hidden16": train("hidden16", "system.hidden_dim=16"),
        "weights_only": train("wo", "checkpoint.save_weights_only=true"),
        "one_group": train("onegroup", "system.optimizer.params=null"),
        "with_scheduler": train("sched", "+system.scheduler.name=StepLR", "+system.scheduler.args.step_size=10"),
    }
    files["folder"] = files["good"].parent
    good = torch.load(files["good"], weights_only=True)
    raw = files["good"].read_bytes()

    def save(name, obj):
        torch.save(obj, root / name)
        return root / name

    (root / "truncated.ckpt").write_bytes(raw[: len(raw) // 2])
    files["truncated"] = root / "truncated.ckpt"
    (root / "notes.txt").write_text("not a checkpoint\n")
    files["text"] = root / "notes.txt"
    files["other_system"] = save("other.ckpt", {**good, "framework": {**good["framework"],
                                                                       "system_type": "dreamfusion-system"}})
    nan_state = {k: v.clone() for k, v in good["state_dict"].items()}
    nan_state["field.grid"][0, 0, 0, 0] = float("nan")
    files["nan"] = save("nan.ckpt", {**good, "state_dict": nan_state})
    files["bare"] = save("bare.ckpt", dict(good["state_dict"]))
    files["pickled"] = save("pickled.ckpt", {**good, "extra": Path("/")})  # a class instance: needs unpickling code
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "broken.yaml").write_text("name: [1, 2\nseed: 3\n")
    files["list_yaml"], files["broken_yaml"] = root / "list.yaml", root / "broken.yaml"
    (root / "a_file").write_text("x")
    files["a_file"] = root / "a_file"
    return {k: str(v) for k, v in files.items()}


# ------------------------------------------------------------------------------------------------ the table
CLI = rows(
    Row("cli-no-mode", ["--config", "image-fitting.yaml"],
        "give --config <yaml> and one of --train, --validate, --test, --export"),
    Row("cli-two-modes", ["--config", "image-fitting.yaml", "--train", "--test"],
        "argument --test: not allowed with argument --train"),
    Row("cli-misspelt-flag", ["--config", "image-fitting.yaml", "--trian"],
        "unknown flag '--trian' (did you mean --train?)"),
    Row("cli-flag-without-value", ["--train", "--config"], "argument --config: expected one argument"),
    Row("cli-gpu-not-ids", ["--config", "image-fitting.yaml", "--train", "--gpu", "a"],
        "--gpu 'a': expected comma-separated device ids such as 0 or 0,1"),
    Row("cli-gpu-repeated", ["--config", "image-fitting.yaml", "--train", "--gpu", "0,0"],
        "--gpu '0,0': expected distinct non-negative device ids"),
    Row("cli-override-without-equals", [*IMAGE, "hamburger"],
        "argument 'hamburger' is neither a flag nor a key=value override"),
    Row("cli-override-not-yaml", [*IMAGE, "tag=@x"],
        "config error: tag: the command-line value '@x' is not valid YAML"),
    Row("cli-describe-unknown-kind", ["--describe", "guidanc", "x"],
        "--describe: unknown kind 'guidanc' (did you mean guidance?)"),
    Row("cli-describe-unknown-type", ["--describe", "guidance", "sds"],
        "unknown guidance type 'sds'; registered guidance types:"),
)

CONFIG = rows(
    Row("cfg-file-missing", ["--config", "nope.yaml", "--train"], "config file 'nope.yaml' not found"),
    Row("cfg-not-yaml", ["--config", "{broken_yaml}", "--train"], "is not valid YAML at line 2, column 5"),
    Row("cfg-not-a-mapping", ["--config", "{list_yaml}", "--train"], "must hold a mapping at the top level"),
    Row("cfg-unknown-key", [*IMAGE, "nmae=x"], "config error: nmae: unknown key (did you mean 'name'?)"),
    Row("cfg-unknown-nested-key", [*IMAGE, "system.hidden_dmi=3"],
        "config error: system.hidden_dmi: unknown key (did you mean 'hidden_dim'?)"),
    Row("cfg-missing-value", SD, "config error: system.prompt_processor.prompt: missing required value"),
    Row("cfg-interpolation", [*IMAGE, "name=${nope}"], "config error: name: Interpolation key 'nope' not found"),
    Row("cfg-trainer-key", [*IMAGE, "trainer.max_step=3"],
        "config error: trainer.max_step: not an argument of Trainer.__init__ (did you mean 'max_steps'?)"),
    Row("cfg-trainer-launcher-key", [*IMAGE, "trainer.devices=2"],
        "config error: trainer.devices: set by the launcher"),
    Row("cfg-checkpoint-key", [*IMAGE, "checkpoint.every_n_steps=3"],
        "config error: checkpoint.every_n_steps: not an argument of ModelCheckpoint.__init__"),
    Row("cfg-optimizer-group", [*IMAGE, "system.optimizer.params.fieldd.lr=0.1"],
        "config error: system.optimizer.params.fieldd: no module or parameter 'fieldd' in the system"),
    Row("cfg-optimizer-dotted-group", [*IMAGE, "system.optimizer.params.field.grid.lr=0.1"],
        "config error: system.optimizer.params.field: group options must be values (lr: 0.01), got a mapping under "
        "'grid'; to name the group 'field.grid' on the command line, write system.optimizer.params[field.grid].lr=..."),
    Row("cfg-loss-weight-orphan", [*IMAGE, "system.loss.lambda_foo=1"],
        "config error: system.loss.lambda_foo: no loss_foo is computed by ImageFittingSystem", False),
    Row("cfg-max-nonfinite-steps", [*IMAGE, "system.max_nonfinite_steps=0"],
        "config error: system.max_nonfinite_steps: must be >= 1, got 0; set at least 1"),
)

TYPES = rows(
    Row("type-int", [*IMAGE, "system.hidden_dim=abc"],
        "config error: system.hidden_dim: expected an integer, got 'abc'"),
    Row("type-bool", [*IMAGE, "use_timestamp=maybe"],
        "config error: use_timestamp: expected true or false, got 'maybe'"),
    Row("type-null", [*IMAGE, "name=null"], "config error: name: must not be null"),
    Row("type-mapping", [*IMAGE, "system.loss=3"], "config error: system.loss: expected a mapping, got 3"),
    Row("type-schedule", [*IMAGE, "system.loss.lambda_mse=[1,2]"],
        "a list schedule is [start_step, start, end, end_step], [start, end, end_step] or [s0, v0, v1, s1, v2, s2, ...], got [1, 2]"),
    Row("type-trainer-int", [*IMAGE, "trainer.max_steps=abc"],
        "config error: trainer.max_steps: expected int, got 'abc' "
        "(in the command-line override 'trainer.max_steps=...')"),
    Row("type-trainer-optional", [*IMAGE, "trainer.max_epochs=abc"],
        "config error: trainer.max_epochs: expected int or null, got 'abc'"),
    Row("value-trainer-precision", [*IMAGE, "trainer.precision=17"], "config error: trainer: Precision 17 is invalid."),
    Row("value-learning-rate-type", [*IMAGE, "system.optimizer.args.lr=[1,2]"],
        "config error: system.optimizer.args.lr: expected a number, got [1, 2]"),
    Row("value-trainer-accumulate", [*IMAGE, "trainer.accumulate_grad_batches=0"],
        "config error: trainer.accumulate_grad_batches: must be >= 1, got 0; set an integer >= 1"),
    Row("value-grid-resolution", [*IMAGE, "system.grid_resolution=0"],
        "config error: system.grid_resolution: must be in [1, 4096], got 0; set an integer in [1, 4096]"),
    Row("value-trainer-interval", [*IMAGE, "trainer.val_check_interval=-1"],
        "config error: trainer.val_check_interval: must be > 0, got -1; set an integer > 0"),
    Row("value-checkpoint", [*IMAGE, "checkpoint.every_n_train_steps=-1"],
        "config error: checkpoint.every_n_train_steps: must be >= 0, got -1; set an integer >= 0"),
    Row("value-learning-rate", [*IMAGE, "system.optimizer.args.lr=-1"],
        "config error: system.optimizer.args: Invalid learning rate: -1"),
    Row("value-optimizer-name", [*IMAGE, "system.optimizer.name=Adamm"],
        "config error: system.optimizer.name: 'Adamm' is not a torch.optim optimizer"),
    Row("value-optimizer-argument", [*IMAGE, "system.optimizer.args.lrr=0.1"],
        "config error: system.optimizer.args: Adam.__init__() got an unexpected keyword argument 'lrr'"),
    Row("value-scheduler-name", [*IMAGE, "+system.scheduler.name=Nope"],
        "config error: system.scheduler.name: 'Nope' is not in torch.optim.lr_scheduler"),
    Row("value-scheduler-argument", [*IMAGE, "+system.scheduler.name=StepLR"],
        "config error: system.scheduler.args: StepLR.__init__() missing 1 required positional argument: 'step_size'"),
    Row("value-batch-size", [*IMAGE, "data.batch_size=-1"],
        "config error: data.batch_size: must be >= 1, got -1; set an integer >= 1"),
)

MODULES = rows(
    Row("mod-system", [*IMAGE, "system_type=image-fiting-system"],
        "system_type: unknown system type 'image-fiting-system'; registered system types:"),
    Row("mod-data", [*IMAGE, "data_type=image-data"],
        "data_type: unknown data type 'image-data'; registered data types:"),
    Row("mod-nested", [*SD, "system.prompt_processor.prompt=a cat", "system.guidance_type=sds"],
        "system.guidance_type: unknown guidance type 'sds'; registered guidance types:"),
    Row("mod-nested-key", [*SD, "system.prompt_processor.prompt=a cat", "system.guidance.guidance_scal=7"],
        "config error: system.guidance.guidance_scal: unknown key (did you mean 'guidance_scale'?)"),
    Row("mod-exporter", ["--config", "image-fitting.yaml", "--export", *FAST, "system.exporter_type=nope"],
        "system.exporter_type: unknown exporter type 'nope'; registered exporter types:"),
)

PATHS = rows(
    Row("path-image-missing", [*IMAGE, "data.image_path=/no/such/image.png"],
        "config error: data.image_path: the file '/no/such/image.png' does not exist; give a PNG/JPEG path"),
    Row("path-image-not-an-image", [*IMAGE, "data.image_path={a_file}"], "config error: data.image_path: cannot read"),
    Row("path-exp-root-is-a-file", [*IMAGE, "exp_root_dir={a_file}/outputs"],
        "is a file, not a folder; set exp_root_dir="),
)

CHECKPOINTS = rows(
    Row("ckpt-missing", [*IMAGE, "resume=/no/such.ckpt"], "resume '/no/such.ckpt' does not exist"),
    Row("ckpt-lightning-alias", [*IMAGE, "resume=last"], "resume 'last' does not exist; check the path"),
    Row("ckpt-folder", [*IMAGE, "resume={folder}"], "is a folder; give the .ckpt file inside it"),
    Row("ckpt-not-a-checkpoint", [*IMAGE, "resume={text}"],
        "is not a PyTorch checkpoint (the file starts with b'not ')"),
    Row("ckpt-truncated", [*IMAGE, "resume={truncated}"],
        "is not a readable PyTorch checkpoint (truncated or another format?)"),
    Row("ckpt-pickled-code", [*IMAGE, "resume={pickled}"],
        "needs pickled code (pathlib.PosixPath) to load and is refused"),
    Row("ckpt-other-system", [*IMAGE, "resume={other_system}"],
        "was written by system 'dreamfusion-system', not 'image-fitting-system'"),
    Row("ckpt-shapes", [*IMAGE, "resume={hidden16}"],
        "does not fit this system (shape mismatch [field.network.0.bias (16,) vs (32,), "
        "field.network.0.weight (16, 10) vs (32, 10)"),
    Row("ckpt-shapes-test", ["--config", "image-fitting.yaml", "--test", *FAST, "resume={hidden16}"],
        "does not fit this system (shape mismatch [field.network.0.bias"),
    Row("ckpt-shapes-export", ["--config", "image-fitting.yaml", "--export", *FAST, "resume={hidden16}"],
        "does not fit this system (shape mismatch [field.network.0.bias"),
    Row("ckpt-nonfinite", [*IMAGE, "resume={nan}"], "holds NaN or Inf weights in [field.grid] (1)"),
    Row("ckpt-weights-only", [*IMAGE, "resume={weights_only}"],
        "holds weights only (saved with checkpoint.save_weights_only=true) and cannot continue a run"),
    Row("ckpt-bare-state-dict", [*IMAGE, "resume={bare}"], "has no 'state_dict': it is not a training checkpoint"),
    Row("ckpt-optimizer-groups", [*IMAGE, "resume={one_group}", "trainer.max_steps=4"],
        "was saved with optimizer parameter groups default (5), this config makes field.grid (1), field.network (4)"),
    Row("ckpt-scheduler", [*IMAGE, "resume={with_scheduler}", "trainer.max_steps=4"],
        "was saved with 1 learning-rate scheduler(s), this config has 0"),
    Row("weights-missing", [*IMAGE, "system.weights=/no/such.ckpt"], "system.weights '/no/such.ckpt' does not exist"),
    Row("weights-folder", [*IMAGE, "system.weights={folder}"], "is a folder; give the .ckpt file inside it"),
    Row("weights-not-a-checkpoint", [*IMAGE, "system.weights={text}"],
        "is not a PyTorch checkpoint (the file starts with"),
    Row("weights-truncated", [*IMAGE, "system.weights={truncated}"],
        "is not a readable PyTorch checkpoint (truncated or another format?)"),
    Row("weights-other-system", [*IMAGE, "system.weights={other_system}"],
        "was written by system 'dreamfusion-system', not 'image-fitting-system'"),
    Row("weights-shapes", [*IMAGE, "system.weights={hidden16}"],
        "does not fit this system (shape mismatch [field.network.0.bias (16,) vs (32,)"),
    Row("weights-nonfinite", [*IMAGE, "system.weights={nan}"],
        "system.weights '{nan}' holds NaN or Inf weights in [field.grid] (1)"),
)

SD_ROWS = rows(
    Row("prompt-empty-on-the-command-line", [*SD, "system.prompt_processor.prompt="],
        "config error: system.prompt_processor.prompt: must not be null; expected str"),
    Row("prompt-empty-string", [*SD, 'system.prompt_processor.prompt=""'],
        "system.prompt_processor.prompt: the prompt is empty; set it to the text to generate"),
    Row("prompt-blank", [*SD, "system.prompt_processor.prompt='   '"],
        "system.prompt_processor.prompt: the prompt is empty; set it to the text to generate"),
    Row("model-offline-prompt-processor",
        [*SD, "system.prompt_processor.prompt=a cat",
         "system.prompt_processor.pretrained_model_name_or_path=someone/not-downloaded"],
        "system.prompt_processor.pretrained_model_name_or_path: model 'someone/not-downloaded' is not in the local "
        "Hugging Face cache and the Hub is off (HF_HUB_OFFLINE=1)"),
    Row("model-offline-guidance",
        [*SD, "system.prompt_processor.prompt=a cat",
         "system.guidance.pretrained_model_name_or_path=someone/not-downloaded"],
        "system.guidance.pretrained_model_name_or_path: model 'someone/not-downloaded' is not in the local Hugging "
        "Face cache and the Hub is off (HF_HUB_OFFLINE=1)"),
    Row("model-folder-missing",
        [*SD, "system.prompt_processor.prompt=a cat", "system.guidance.pretrained_model_name_or_path=/no/such/model"],
        "system.guidance.pretrained_model_name_or_path: directory '/no/such/model' does not exist"),
    Row("model-folder-not-diffusers",
        [*SD, "system.prompt_processor.prompt=a cat", "system.guidance.pretrained_model_name_or_path={a_folder}"],
        "has no usable 'unet/' folder; point system.guidance.pretrained_model_name_or_path at a Stable Diffusion "
        "checkpoint in diffusers format"),
    Row("guidance-scale-nan", [*SD, "system.prompt_processor.prompt=a cat", "system.guidance.guidance_scale=.nan"],
        "config error: system.guidance.guidance_scale: must be a number, got nan; set a finite number"),
    Row("guidance-step-percent", [*SD, "system.prompt_processor.prompt=a cat", "system.guidance.max_step_percent=98"],
        "config error: system.guidance.max_step_percent: the schedule's value at step 0 is 98.0, must be in [0, 1]; "
        "give a fraction of the timesteps"),
    Row("scheduler-without-timesteps",
        [*SD, "system.prompt_processor.prompt=a cat", "system.guidance.pretrained_model_name_or_path={no_timesteps}"],
        "system.guidance.pretrained_model_name_or_path: the model's scheduler has num_train_timesteps 0"),
    Row("prompt-encoder-width",
        [*SD, "system.prompt_processor.prompt=a cat", "system.guidance.pretrained_model_name_or_path={wide_text}"],
        "system.prompt_processor.pretrained_model_name_or_path: its text encoder gives 32-wide embeddings but the "
        "UNet of system.guidance.pretrained_model_name_or_path cross-attends to 48"),
)


def odd_models(tiny_sd: str, root) -> dict:
    """Copies of the tiny model with a scheduler of 0 timesteps, and with a UNet of another text width."""
    import json
    import shutil

    from diffusers import UNet2DConditionModel

    from lab.models.tiny_sd import TINY_UNET

    no_timesteps, wide_text = root / "no-timesteps", root / "wide-text"
    shutil.copytree(tiny_sd, no_timesteps)
    config = no_timesteps / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "num_train_timesteps": 0}))
    shutil.copytree(tiny_sd, wide_text, ignore=shutil.ignore_patterns("unet"))
    UNet2DConditionModel(**{**TINY_UNET, "cross_attention_dim": 48}).save_pretrained(wide_text / "unet")
    return {"no_timesteps": str(no_timesteps), "wide_text": str(wide_text)}


def fill(items, m):
    return [s.format(**m) if "{" in s and "${" not in s else s for s in items]


@pytest.mark.parametrize("row", CLI + CONFIG + TYPES + MODULES + PATHS + CHECKPOINTS)
def test_bad_input(row, m, tmp_path, capsys):
    check(fill(row.argv, m), fill([row.words], m)[0], tmp_path, capsys, row.leaves_nothing)


@pytest.mark.parametrize("row", SD_ROWS)
def test_bad_input_of_a_diffusion_system(row, tiny_sd, tiny_embedding_cache, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    local = {"tiny_sd": tiny_sd, "a_folder": str(tmp_path / "empty")}
    if any("{no_timesteps}" in a or "{wide_text}" in a for a in row.argv):
        local.update(odd_models(tiny_sd, tmp_path))
    argv = fill(row.argv, local) + [
        f"system.prompt_processor.cache_dir={tiny_embedding_cache}",
        *[f"system.{k}.pretrained_model_name_or_path={tiny_sd}" for k in ("prompt_processor", "guidance")
          if not any(a.startswith(f"system.{k}.pretrained_model_name_or_path=") for a in row.argv)],
    ]
    check(argv, row.words, tmp_path, capsys)


# ------------------------------------------------------------------------------------------------ output folder
ROWS["out-unwritable"] = "cannot write the trial folder"
ROWS["out-disk-full"] = "free; this run needs about"
ROWS["out-disk-full-while-training"] = "(No space left on device); the checkpoints written before are kept"
ROWS["out-trial-exists"] = "exists already and is never overwritten; set use_timestamp=true or another tag"


def test_out_unwritable(tmp_path, capsys):
    """A folder that cannot be written: /sys (refuses even root), and a read-only folder when not running as root."""
    import os

    targets = ["/sys/outputs"] if Path("/sys").is_dir() else []
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        targets.append(str(ro / "outputs"))
    for target in targets:
        code = launch.main([*IMAGE, f"exp_root_dir={target}"])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and ROWS["out-unwritable"] in line and "set exp_root_dir=" in line, line
    if not targets:
        pytest.skip("running as root without /sys: no folder here refuses writes")
    assert not Path("/sys/outputs").exists()


def test_out_disk_full(tmp_path, capsys, monkeypatch):
    import systems.preflight

    free = shutil.disk_usage(tmp_path)._replace(free=1000)
    monkeypatch.setattr(systems.preflight.shutil, "disk_usage", lambda path: free)
    line = check(IMAGE, ROWS["out-disk-full"], tmp_path, capsys)
    assert "has 1.0 kB free" in line and "set exp_root_dir=<another disk>" in line


def test_out_disk_full_while_training(tmp_path, capsys, monkeypatch):
    """The disk fills up at step 4: one line, and the checkpoints of steps 1-3 stay complete."""
    from systems.atomic_checkpoint import AtomicCheckpointIO

    original = AtomicCheckpointIO.save_checkpoint

    def save(self, checkpoint, path, storage_options=None):
        if checkpoint["global_step"] >= 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", save)
    argv = ["--config", "image-fitting.yaml", "--train", *FAST, "trainer.max_steps=8",
            "checkpoint.every_n_train_steps=1"]
    line = check(argv, ROWS["out-disk-full-while-training"], tmp_path, capsys, leaves_nothing=False)
    assert "at step 4" in line
    ckpts = tmp_path / "out" / "image-fitting" / "t" / "ckpts"
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt", "epoch=0-step=3.ckpt", "last.ckpt"]
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 3


def test_out_trial_exists(tmp_path, capsys):
    argv = [*IMAGE, f"exp_root_dir={tmp_path / 'out'}"]
    assert launch.main(argv) == 0
    trial = tmp_path / "out" / "image-fitting" / "t"
    before = {p: p.read_bytes() for p in trial.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert launch.main(argv) == 2
    assert ROWS["out-trial-exists"] in one_error_line(capsys.readouterr().err)
    assert {p: p.read_bytes() for p in trial.rglob("*") if p.is_file()} == before


# ------------------------------------------------------------------------------------------------ the docs
def test_the_docs_table_lists_every_row_with_its_words():
    import tests.test_bad_inputs_values  # noqa: F401  (registers the rows of the other classes)

    text = (REPO_ROOT / "docs" / "bad-inputs.md").read_text()
    documented = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) >= 3 and re.fullmatch(r"`[a-z0-9-]+`", cells[0]):
            documented[cells[0].strip("`")] = " ".join(cells[2:]).replace("`", "").replace("\\|", "|")
    assert sorted(documented) == sorted(ROWS)
    for key, words in ROWS.items():
        shown = re.sub(r"\{[a-z_]+\}", "<file>", words)
        assert all(part in documented[key] for part in shown.split("<file>")), (key, words, documented[key])


# ------------------------------------------------------------------------------------------------ the loader itself
def test_weights_saved_under_the_other_hash_grid_backends_key_load():
    """The check is the load itself: a module that renames keys while loading (the hash grid reads tiny-cuda-nn's
    ``tcnn.params`` as its own ``params``) is not refused, and a key that is really missing still is, by name."""
    from framework.errors import CheckpointError
    from framework.networks.hash_grid import HashGridConfig, HashGridEncoding
    from framework.utils.checkpoint import load_state_into

    cfg = HashGridConfig(n_levels=2, log2_hashmap_size=8, base_resolution=4, per_level_scale=2.0, backend="torch")
    source, target = HashGridEncoding(3, cfg), HashGridEncoding(3, cfg)
    with torch.no_grad():
        source.params.uniform_(-1, 1)
    as_tcnn = {k.replace("params", "tcnn.params"): v for k, v in source.state_dict().items()}
    assert "tcnn.params" in as_tcnn
    load_state_into(target, as_tcnn, "grid.ckpt")
    assert torch.equal(target.params, source.params)
    with pytest.raises(CheckpointError, match=r"'grid.ckpt' does not fit this system \(missing keys \[params\]"):
        load_state_into(target, {}, "grid.ckpt")
