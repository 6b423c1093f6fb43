"""A tiny random-weight Stable Diffusion checkpoint in diffusers format, built offline and deterministically.

Tests and benchmarks load it through the same ``from_pretrained`` calls a user's SD 2.1 goes through, so the loading
code is the real one. The directory has the layout of a Hub SD repository: ``model_index.json``, ``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``.

* UNet2DConditionModel: block_out_channels (32, 64), cross-attention in every block (so LoRA reaches the down, mid
  and up blocks), linear projections as SD 2.x, cross_attention_dim 32, sample_size 16.
* AutoencoderKL: two blocks (downscale 2), 4 latent channels, a non-standard ``scaling_factor`` (0.35) so that a
  typed-in 0.18215 anywhere shows up in tests.
* CLIPTextModel: 2 layers, hidden size 32, the full 49408-token vocabulary.
* The real CLIP tokenizer: OpenAI's byte-pair vocabulary (``bpe_simple_vocab_16e6.txt.gz``, shipped by the PyPI
  package ``open_clip_torch``) turned into ``vocab.json`` + ``merges.txt`` the way OpenAI's ``SimpleTokenizer`` builds
  it, padded with ``!`` as SD 2.x is; "a photo of a cat" encodes to [49406, 320, 1125, 539, 320, 2368, 49407].
* Scheduler: a PNDMScheduler config with SD's betas (scaled_linear 0.00085..0.012, 1000 steps), as SD 2.1-base ships;
  ``prediction_type`` ``epsilon`` or ``v_prediction``.

Example:
    >>> build_tiny_sd("/tmp/tiny-sd", prediction_type="epsilon")  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Literal, Tuple

import torch

from framework.errors import ModelNotFoundError

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
# OpenAI's SimpleTokenizer keeps merges 1 .. 49152 - 256 - 2 of the file (line 0 is a header).
N_MERGES = 49152 - 256 - 2

TINY_UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(2, 4),
    cross_attention_dim=32,
    norm_num_groups=32,
    use_linear_projection=True,
)
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(32, 64),
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=32,
    sample_size=32,
    scaling_factor=0.35,
)
TINY_TEXT_ENCODER = dict(
    vocab_size=49408,
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    projection_dim=32,
    hidden_act="gelu",
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=0,
)
SD_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
    timestep_spacing="leading",
)


def write_sd_scheduler_config(folder: str | os.PathLike) -> None:
    """Add ``"clip_sample": false`` to ``<folder>/scheduler/scheduler_config.json``, as SD repositories ship it.

    PNDMScheduler has no such argument, but pipelines convert the config to DDIM or DDPM, whose default (True) clips
    predicted clean latents to [-1, 1]: wrong for SD's latents and for the toy prior's unit-variance ones.
    """
    path = Path(folder) / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    config["clip_sample"] = False
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def clip_bpe_path() -> Path:
    """Path of OpenAI's CLIP BPE vocabulary as shipped by ``open_clip_torch`` (found without importing open_clip)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the CLIP tokenizer vocabulary comes from the PyPI package open_clip_torch, which is not installed; "
            "install it with 'pip install --no-deps open_clip_torch'"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / BPE_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"open_clip_torch is installed but has no {BPE_FILE} at {path}; reinstall it")
    return path


def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: printable Latin-1 bytes map to themselves, the rest to code points 256+n."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping  # insertion order (printable bytes first) fixes the token ids


def clip_vocab_and_merges(bpe_path: Path) -> Tuple[Dict[str, int], List[Tuple[str, str]]]:
    """The 49408-entry CLIP vocabulary and its 48894 merges, built from the BPE file as OpenAI's tokenizer does."""
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [a + "</w>" for a in alphabet] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges  # type: ignore[return-value]


def build_clip_tokenizer(out_dir: str | os.PathLike) -> Path:
    """Write the CLIP tokenizer files as SD 2.x repositories ship them: vocab.json, merges.txt, configs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges(clip_bpe_path())
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    eot = "<|endoftext|>"
    special = {"bos_token": "<|startoftext|>", "eos_token": eot, "unk_token": eot, "pad_token": "!"}
    config = dict(special, do_lower_case=True, errors="replace", model_max_length=77, tokenizer_class="CLIPTokenizer")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def build_tiny_sd(
    out_dir: str | os.PathLike,
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon",
    seed: int = 0,
) -> Path:
    """Build the tiny SD checkpoint into ``out_dir`` and return it. Same arguments, same bytes.

    Each component is initialised from its own seed derived from ``seed``, so the v-prediction variant
    (``seed=1`` by convention) has different UNet weights from the eps one, as SD 2.1 and SD 2.1-base do.
    """
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1000 * seed + 1)
        unet = UNet2DConditionModel(**TINY_UNET)
        torch.manual_seed(1000 * seed + 2)
        vae = AutoencoderKL(**TINY_VAE)
        torch.manual_seed(1000 * seed + 3)
        text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT_ENCODER))
    scheduler = PNDMScheduler(prediction_type=prediction_type, **SD_SCHEDULER)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(str(build_clip_tokenizer(tmp)))
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out), safe_serialization=True)
    write_sd_scheduler_config(out)
    # Replace transformers' serialisation of the tokenizer by the files an SD 2.x repository has.
    for f in (out / "tokenizer").iterdir():
        f.unlink()
    build_clip_tokenizer(out / "tokenizer")
    return out
