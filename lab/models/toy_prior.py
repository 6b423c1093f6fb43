"""Architecture of the toy prior: a small Stable Diffusion (AutoencoderKL, UNet2DConditionModel, CLIP text encoder)
sized to train on 2 CPU cores in under an hour on 64x64 renders of coloured primitives (``lab.toy``).

* AutoencoderKL: 4x downsampling (64x64x3 -> 16x16x4), blocks of 16/32/64 channels, one layer each (0.68 M
  parameters). Its latents are normalised to zero mean and unit variance per channel by folding the statistics into
  ``quant_conv`` / ``post_quant_conv`` (:func:`fold_latent_statistics`), so ``scaling_factor`` is 1.0 and every
  consumer (the stock pipeline, the guidance) multiplies by it as for real SD.
* UNet2DConditionModel: blocks of 32/64/64 channels, one layer each, attention only at 8x8, 4x4 and in the mid
  block with 2 heads (attention at 16x16 with tiny heads was most of a CPU step), cross-attention dimension 32,
  epsilon prediction (1.7 M parameters).
* Noise schedule: SD's betas rescaled to zero terminal SNR, v-prediction, DDIM with trailing timesteps (Lin et al.,
  "Common Diffusion Noise Schedules and Sample Steps are Flawed", 2023). With SD's own schedule (terminal SNR 0.005)
  this prior learned to read each object's colour from the faint signal the schedule leaves in pure noise: samples
  took their colour from the seed, whatever the prompt or the guidance scale. At zero terminal SNR the first
  sampling step holds no signal, so colour must come from the text.
* CLIPTextModel: the tiny random encoder of ``lab.models.tiny_sd`` (frozen; it is never trained) with the real
  CLIP tokenizer.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

TOY_VAE = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(16, 32, 64),
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=8,
    sample_size=64,
    scaling_factor=1.0,
)
TOY_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    rescale_betas_zero_snr=True,
    prediction_type="v_prediction",
    timestep_spacing="trailing",
    clip_sample=False,
    set_alpha_to_one=False,
)
"""The DDIMScheduler the toy prior is saved with (the guidance reads betas and prediction type from it)."""

TOY_UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=2,  # diffusers reads this as the number of heads
    cross_attention_dim=32,
    norm_num_groups=32,
    use_linear_projection=True,
)


def build_vae(seed: int):
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(**TOY_VAE)


def build_unet(seed: int):
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(**TOY_UNET)


@torch.no_grad()
def fold_latent_statistics(vae, mean: Tensor, std: Tensor) -> None:
    """Make ``vae`` encode to ``(z - mean) / std`` and decode from it, per latent channel, in place.

    ``quant_conv`` (1x1, outputs [posterior mean; log-variance]) becomes: mean rows scaled by 1/std and shifted by
    -mean/std, log-variance bias lowered by 2 log std. ``post_quant_conv`` takes ``std * z' + mean``: its weights are
    scaled by std over input channels and ``W @ mean`` is added to its bias. Reconstructions are unchanged.
    """
    c = mean.numel()
    q = vae.quant_conv
    q.weight[:c] /= std.view(c, 1, 1, 1)
    q.bias[:c] = (q.bias[:c] - mean) / std
    q.bias[c:] -= 2.0 * torch.log(std)
    p = vae.post_quant_conv
    p.bias += (p.weight[:, :, 0, 0] @ mean)
    p.weight *= std.view(1, c, 1, 1)
    vae.register_to_config(scaling_factor=1.0)


def latent_statistics(latents: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation of latents ``(N, C, H, W)``."""
    return latents.mean(dim=(0, 2, 3)), latents.std(dim=(0, 2, 3))
