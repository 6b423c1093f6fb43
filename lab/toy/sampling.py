"""Samples of the toy prior through diffusers' own pipeline (the reference the studies compare particles with).

``prior_samples`` loads ``load/toy-sd`` (or another folder) as ``StableDiffusionPipeline`` and draws images with
classifier-free guidance (diffusers convention) and one of two samplers:

* ``ddim``: DDIM with 30 trailing steps (deterministic given the initial noise), the sampler of the quality table;
* ``ddpm``: ancestral sampling (DDPM, fresh noise at every step) with 50 steps, what "the prior's own samples" of
  the ambiguity studies are.
"""

from __future__ import annotations

from functools import lru_cache
from typing import List

import torch
from torch import Tensor

SAMPLERS = ("ddim", "ddpm")


@lru_cache(maxsize=2)
def pipeline(model: str):
    """``StableDiffusionPipeline`` of a local diffusers folder, fp32 on the CPU (cached per folder)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float32, use_safetensors=True,
                                                   safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def prior_samples(model: str, prompt: str, n: int, seed: int = 0, guidance_scale: float = 7.5,
                  sampler: str = "ddim", steps: int | None = None, batch: int = 64) -> Tensor:
    """``n`` samples ``(n, H, W, 3)`` in [0, 1] of ``prompt``; the same arguments give the same images."""
    from diffusers import DDIMScheduler, DDPMScheduler

    if sampler not in SAMPLERS:
        raise KeyError(f"unknown sampler {sampler!r}; the samplers are {', '.join(SAMPLERS)}")
    pipe = pipeline(model)
    scheduler_cls = DDIMScheduler if sampler == "ddim" else DDPMScheduler
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    steps = steps or (30 if sampler == "ddim" else 50)
    gen = torch.Generator().manual_seed(seed)
    out: List[Tensor] = []
    for start in range(0, n, batch):
        m = min(batch, n - start)
        images = pipe([prompt] * m, num_inference_steps=steps, guidance_scale=guidance_scale, generator=gen,
                      output_type="pt").images
        out.append(images.permute(0, 2, 3, 1).clamp(0.0, 1.0))
    return torch.cat(out)
