"""Stable Diffusion 2.1- and 1.5-shaped checkpoints with random weights, for benchmarks and GPU checks (no download).

The UNet and VAE have SD 2.1's configs (866 M and 84 M parameters), or SD 1.5's (``version="1.5"``: 860 M, text width
768, no linear projections, 8 heads); the text encoder has the version's width (1024 or 768) but two layers (the
guidance never runs it per step: prompt embeddings are cached); the tokenizer is the real CLIP one
(``lab.models.tiny_sd.build_clip_tokenizer``). ``sample_size`` 64 is SD 2.1-base and SD 1.5 (512 px, eps), 96 is
SD 2.1 (768 px, v-prediction).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

SD21_UNET = dict(
    sample_size=96,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10, 20, 20),
    cross_attention_dim=1024,
    use_linear_projection=True,
    upcast_attention=True,
)
SD15_UNET = dict(
    SD21_UNET,
    sample_size=64,
    attention_head_dim=8,
    cross_attention_dim=768,
    use_linear_projection=False,
    upcast_attention=False,
)
SD21_VAE = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    latent_channels=4,
    layers_per_block=2,
    sample_size=768,
)


def build_sd21_shaped(
    out_dir: str | os.PathLike,
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon",
    sample_size: int = 64,
    seed: int = 0,
    fp16: bool = True,
    version: Literal["2.1", "1.5"] = "2.1",
) -> Path:
    """Write a full diffusers Stable Diffusion folder with random weights (fp16 files unless ``fp16=False``)."""
    import tempfile

    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from lab.models.tiny_sd import SD_SCHEDULER, build_clip_tokenizer, write_sd_scheduler_config

    out = Path(out_dir)
    if (out / "model_index.json").is_file():
        return out
    dtype = torch.float16 if fp16 else torch.float32
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet_config = SD21_UNET if version == "2.1" else SD15_UNET
        width = unet_config["cross_attention_dim"]
        unet = UNet2DConditionModel(**dict(unet_config, sample_size=sample_size)).to(dtype)
        vae = AutoencoderKL(**SD21_VAE).to(dtype)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=2,
                num_attention_heads=width // 64, max_position_embeddings=77, projection_dim=width, hidden_act="gelu",
            )
        ).to(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(str(build_clip_tokenizer(tmp)))
    StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler(prediction_type=prediction_type, **SD_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(str(out), safe_serialization=True)
    write_sd_scheduler_config(out)
    for f in (out / "tokenizer").iterdir():
        f.unlink()
    build_clip_tokenizer(out / "tokenizer")
    return out
