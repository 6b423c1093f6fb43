"""The LoRA-fit diagnostic of VSD: does ``eps_phi`` really learn the score of the particles' own renders?

ProlificDreamer's estimator ``eps_phi`` (the LoRA model) is trained with the ordinary diffusion loss on the
particles' latents; if it learns, its denoising loss on those latents falls below that of the frozen model it started
from. A broken VSD (LoRA learning rate 0, LoRA trained on the wrong target, a camera embedding that never reaches the
UNet) looks like a working one in the loss curves, but not here.

On the latents ``x0`` (B, 4, h, w) of the current step, at a few fixed timesteps ``t_k`` with fixed noise ``eps``
(a generator seeded with ``seed``, so every measurement of the same shape sees the same noise), both models denoise
``x_t = alpha_t x0 + sigma_t eps`` with the LoRA model's text (view-independent prompt) and camera, and their errors
against the LoRA model's training target (eps or v) are compared:

* ``lora_fit/lora``: mean squared error of the LoRA model (at the run's ``lora_scale``), over samples and ``t_k``;
* ``lora_fit/frozen``: the same for the frozen base model (the LoRA model at scale 0: exactly its base UNet);
* ``lora_fit/ratio``: lora / frozen; ``lora_fit/ratio_t<k>``: the same at each timestep.

At the start the ratio is exactly 1 (B = 0, zero-initialised camera embedding); a LoRA that learns the particles'
score brings it below 1, most at small and middle ``t``, where the particles differ from the prior's samples.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence

import torch
from torch import Tensor

from framework.guidance.diffusion import NoiseSchedule

LoraForward = Callable[[Tensor, Tensor, Tensor, Tensor, float], Tensor]
"""(x_t (N, 4, h, w), t (N,), text (N, 77, C), camera (N, D), scale) -> raw LoRA-model output (N, 4, h, w)."""


@torch.no_grad()
def lora_fit(
    lora_forward: LoraForward,
    schedule: NoiseSchedule,
    latents: Tensor,
    text: Tensor,
    camera: Tensor,
    timesteps: Sequence[int],
    lora_scale: float,
    seed: int,
) -> Dict[str, float]:
    """The LoRA model's and the frozen model's denoising errors on ``latents`` (B, 4, h, w) at ``timesteps``.

    ``text`` (B, 77, C) and ``camera`` (B, D) are the LoRA model's conditions; ``schedule`` its forward process.
    Returns the ``lora_fit/*`` values described in the module docstring (Python floats).
    """
    b, k = latents.shape[0], len(timesteps)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    noise = torch.randn(latents.shape, generator=gen, dtype=torch.float32).to(latents.device)
    x0 = latents.detach().to(torch.float32).repeat(k, 1, 1, 1)
    eps = noise.repeat(k, 1, 1, 1)
    t = torch.tensor(list(timesteps), dtype=torch.long, device=latents.device).repeat_interleave(b)
    x_t = schedule.add_noise(x0, eps, t)
    target = schedule.training_target(x0, eps, t)
    text_k, camera_k = text.repeat(k, 1, 1), camera.repeat(k, 1)
    errors = {}
    for name, scale in (("lora", lora_scale), ("frozen", 0.0)):
        out = lora_forward(x_t, t, text_k, camera_k, scale)
        errors[name] = ((out - target) ** 2).flatten(1).mean(1).view(k, b).mean(1)  # (k,) per timestep
    result = {
        "lora_fit/lora": errors["lora"].mean().item(),
        "lora_fit/frozen": errors["frozen"].mean().item(),
    }
    result["lora_fit/ratio"] = result["lora_fit/lora"] / result["lora_fit/frozen"]
    for i, tk in enumerate(timesteps):
        result[f"lora_fit/ratio_t{int(tk)}"] = (errors["lora"][i] / errors["frozen"][i]).item()
    return result
