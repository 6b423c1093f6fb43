"""Deliberately broken VSD guidances: what a VSD whose ``unet_lora`` silently fails would look like.

They calibrate the studies (docs/toy.md): a study that cannot tell one of these from the real VSD cannot detect
that failure. Registered under ``lab-...`` names when this module is imported (the study scripts import it;
``launch.py`` does not, so users never see them). A third failure needs no code: the LoRA's learning rate 0
(``system.optimizer.params.guidance.lr=0``) leaves the estimator equal to the frozen model.

* ``lab-vsd-no-camera``: the LoRA model never sees the camera (its camera embedding is left out of every call);
* ``lab-vsd-noise-lora``: the LoRA model is trained on pure Gaussian noise instead of the particles' latents, so it
  learns the score of noise, not of the particles.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from framework import registry
from framework.guidance.vsd import StableDiffusionVSDGuidance


@registry.register("guidance", "lab-vsd-no-camera")
class NoCameraVSDGuidance(StableDiffusionVSDGuidance):
    """VSD whose LoRA model is called without its camera embedding (as if the class embedding were never set)."""

    def lora_forward(self, x: Tensor, t: Tensor, text: Tensor, camera: Tensor, scale: float) -> Tensor:
        with self.lora.scaled(scale):
            return self.run_unet(self.lora_model.unet, x, t, text)


@registry.register("guidance", "lab-vsd-noise-lora")
class NoiseLoraVSDGuidance(StableDiffusionVSDGuidance):
    """VSD whose LoRA model is trained on latents of pure noise instead of the particles' latents."""

    def lora_training_loss(self, latents: Tensor, text: Tensor, camera: Tensor, t: Tensor, noise: Tensor,
                           keep_camera: Tensor, scale: Optional[float] = None) -> Tensor:
        return super().lora_training_loss(torch.randn_like(latents), text, camera, t, noise, keep_camera, scale)
