"""The tiny SD builder, model loading errors, and the guidance configs."""

import hashlib
import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import CLIPTokenizer

import framework.guidance  # noqa: F401  (registration)
import framework.prompt_processors  # noqa: F401
from framework import registry
from framework.config import field_docs
from framework.errors import ConfigError, ModelNotFoundError
from lab.models import tiny_sd as tiny_sd_module
from lab.models.tiny_sd import build_tiny_sd

SDS = registry.find("guidance", "stable-diffusion-guidance")
VSD = registry.find("guidance", "stable-diffusion-vsd-guidance")


def digest(folder: Path) -> dict:
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_tokenizer_is_real_clip(tiny_sd):
    tok = CLIPTokenizer.from_pretrained(tiny_sd, subfolder="tokenizer")
    assert len(tok) == 49408 and tok.model_max_length == 77
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert sorted(p.name for p in (Path(tiny_sd) / "tokenizer").iterdir()) == [
        "merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"
    ]


def test_build_is_deterministic_and_variants_differ(tiny_sd, tiny_sd_v, tmp_path):
    again = build_tiny_sd(tmp_path / "again", prediction_type="epsilon", seed=0)
    assert digest(Path(tiny_sd)) == digest(again)
    eps, v = digest(Path(tiny_sd)), digest(Path(tiny_sd_v))
    assert eps["unet/diffusion_pytorch_model.safetensors"] != v["unet/diffusion_pytorch_model.safetensors"]
    assert '"v_prediction"' in (Path(tiny_sd_v) / "scheduler" / "scheduler_config.json").read_text()


def test_script_builds_a_model(tmp_path, capsys):
    import scripts.make_tiny_sd as script

    assert script.main([str(tmp_path / "m"), "--prediction-type", "v_prediction"]) == 0
    assert (tmp_path / "m" / "model_index.json").is_file()
    assert digest(tmp_path / "m")["unet/diffusion_pytorch_model.safetensors"]


def test_missing_open_clip_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="open_clip_torch"):
        tiny_sd_module.clip_bpe_path()


@pytest.mark.parametrize(
    "name,expected",
    [
        ("stabilityai/stable-diffusion-2-1-base", "HF_HUB_OFFLINE"),
        ("/nonexistent/stable-diffusion", "does not exist"),
    ],
)
def test_missing_model_is_one_line(name, expected):
    with pytest.raises(ModelNotFoundError) as e:
        SDS({"pretrained_model_name_or_path": name}, prefix="system.guidance")
    msg = str(e.value)
    assert "\n" not in msg and name in msg and expected in msg
    assert "system.guidance.pretrained_model_name_or_path" in msg


def test_folder_without_a_unet(tiny_sd, tmp_path):
    with pytest.raises(ModelNotFoundError, match="no usable 'unet/'"):
        SDS({"pretrained_model_name_or_path": str(tmp_path)})
    with pytest.raises(ModelNotFoundError, match="pretrained_model_name_or_path_lora"):
        VSD({"pretrained_model_name_or_path": tiny_sd, "pretrained_model_name_or_path_lora": str(tmp_path)})


@pytest.mark.parametrize("kind,name", [("guidance", "stable-diffusion-guidance"),
                                       ("guidance", "stable-diffusion-vsd-guidance"),
                                       ("prompt_processor", "stable-diffusion-prompt-processor")])
def test_every_config_field_is_documented(kind, name):
    cfg = registry.find(kind, name).Config
    docs = field_docs(cfg)
    missing = [f for f in cfg.__dataclass_fields__ if not docs.get(f)]
    assert not missing


def test_config_is_strict_and_takes_threestudio_values(tiny_sd):
    with pytest.raises(ConfigError, match="guidance_scale"):
        SDS({"pretrained_model_name_or_path": tiny_sd, "guidance_scal": 7.5})
    with pytest.raises(ConfigError, match="weighting_strategy"):
        SDS({"pretrained_model_name_or_path": tiny_sd, "weighting_strategy": "dreamfusion"})
    with pytest.raises(ConfigError, match="max_step_percent"):
        SDS({"pretrained_model_name_or_path": tiny_sd, "max_step_percent": 98})
    g = VSD({"pretrained_model_name_or_path": tiny_sd, "pretrained_model_name_or_path_lora": tiny_sd,
             "min_step_percent": 0.02, "max_step_percent": [5000, 0.98, 0.5, 5001], "lora_n_timestamp_samples": 1,
             "camera_condition_type": "extrinsics", "guidance_scale_lora": 1.0})
    g.update_step(0, 5001)
    assert (g.min_step, g.max_step) == (20, 500)
    assert g.models.unet.dtype == torch.float32


def test_frozen_weights_dtype_rule():
    from framework.guidance.loading import frozen_weights_dtype

    assert frozen_weights_dtype(True, torch.device("cuda")) == torch.float16
    assert frozen_weights_dtype(False, torch.device("cuda")) == torch.float32
    assert frozen_weights_dtype(True, torch.device("cpu")) == torch.float32


def _sd_image_argv(tmp_path, model, prompt_model, cache):
    return ["--config", "sds-image.yaml", "--train", f"exp_root_dir={tmp_path / 'out'}", "use_timestamp=false",
            "trainer.max_steps=1", f"system.prompt_processor.pretrained_model_name_or_path={prompt_model}",
            "system.prompt_processor.prompt=a cat", f"system.prompt_processor.cache_dir={cache}",
            f"system.guidance.pretrained_model_name_or_path={model}", "system.height=32", "system.width=32"]


def _launch_error(argv, capsys):
    import launch

    code = launch.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1, err[-3000:]
    return lines[0]


def test_a_scheduler_without_timesteps_is_one_line(tiny_sd, tiny_embedding_cache, tmp_path, capsys):
    import json
    import shutil

    broken = tmp_path / "no-timesteps"
    shutil.copytree(tiny_sd, broken)
    config = broken / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "num_train_timesteps": 0}))
    line = _launch_error(_sd_image_argv(tmp_path, broken, tiny_sd, tiny_embedding_cache), capsys)
    assert "system.guidance.pretrained_model_name_or_path" in line and "num_train_timesteps 0" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


def test_a_prompt_encoder_of_another_width_is_one_line(tiny_sd, tiny_embedding_cache, tmp_path, capsys):
    import shutil

    from diffusers import UNet2DConditionModel

    wide = tmp_path / "wide-text"
    shutil.copytree(tiny_sd, wide)
    shutil.rmtree(wide / "unet")
    UNet2DConditionModel(**{**tiny_sd_module.TINY_UNET, "cross_attention_dim": 48}).save_pretrained(wide / "unet")
    line = _launch_error(_sd_image_argv(tmp_path, wide, tiny_sd, tiny_embedding_cache), capsys)
    assert "system.prompt_processor.pretrained_model_name_or_path" in line and "32" in line and "48" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


@pytest.mark.parametrize("recipe,override,key", [
    ("sds-image.yaml", "system.guidance.guidance_scale=.nan", "system.guidance.guidance_scale"),
    ("sds-image.yaml", "system.guidance.guidance_scale=inf", "system.guidance.guidance_scale"),
    ("sds-image.yaml", "system.guidance.max_step_percent=[0,0.98,1.5,100]", "system.guidance.max_step_percent"),
    ("sds-image.yaml", "system.guidance.grad_clip=0", "system.guidance.grad_clip"),
    ("sds-image.yaml", "system.guidance.trainer_max_steps=0", "system.guidance.trainer_max_steps"),
    ("vsd-image.yaml", "system.guidance.guidance_scale_lora=.nan", "system.guidance.guidance_scale_lora"),
    ("vsd-image.yaml", "system.guidance.lora_camera_dropout=1.5", "system.guidance.lora_camera_dropout"),
    ("vsd-image.yaml", "system.guidance.lora_scale=-1", "system.guidance.lora_scale"),
    ("vsd-image.yaml", "system.guidance.lora_rank=0", "system.guidance.lora_rank"),
    ("vsd-image.yaml", "system.guidance.lora_fit_every=0", "system.guidance.lora_fit_every"),
    ("sds-image.yaml", "system.prompt_processor.front_threshold=.nan", "system.prompt_processor.front_threshold"),
    ("sds-image.yaml", "system.prompt_processor.overhead_threshold=120", "system.prompt_processor.overhead_threshold"),
    ("sds-image.yaml", "system.prompt_processor.perp_neg_f_sb=[1,.nan,0]", "system.prompt_processor.perp_neg_f_sb"),
])
def test_numeric_values_are_finite_and_bounded(recipe, override, key, tmp_path, capsys):
    argv = ["--config", recipe, "--train", f"exp_root_dir={tmp_path / 'out'}", "system.prompt_processor.prompt=a cat",
            override]
    line = _launch_error(argv, capsys)
    assert key in line, line
    assert not (tmp_path / "out").exists()
