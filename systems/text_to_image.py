"""``text-to-image-system``: score distillation of image particles (ProlificDreamer's 2D experiment).

The trainable state is ``n_particles`` images, as latents (``rgb_as_latents``, ProlificDreamer's 2D setting) or as RGB
pixels (a sigmoid of free logits, encoded by the guidance's VAE). The guidance is any registered one, unchanged: SDS,
or VSD whose one ``unet_lora`` learns the score of all particles. Images have no camera: the system passes a null
camera (zero elevation, azimuth and distance, identity pose), and the guidance's own switch
``view_dependent_prompting: false`` selects the plain prompt (the system checks that it is off).

Outputs: a grid of the decoded particles at every validation (``save/it<N>-val/0000.png``, and in TensorBoard), the
final particles as PNGs and an mp4 of the optimisation built from the validation grids (``save/it<N>-test/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Dict, List

import torch
import torch.nn as nn

from framework import registry
from framework.config import Bounds, ImageSide, NonNegativeFloat
from framework.utils.saving import Panel
from systems.guided import GuidedSystem


def null_camera(batch_size: int, device: torch.device) -> Dict[str, torch.Tensor]:
    """The camera inputs of a guidance call for images: zeros and identity poses."""
    zeros = torch.zeros(batch_size, device=device)
    eye = torch.eye(4, device=device).expand(batch_size, 4, 4)
    return {"elevation": zeros, "azimuth": zeros, "camera_distances": zeros, "c2w": eye, "mvp_mtx": eye}


@registry.register("system", "text-to-image-system")
class TextToImageSystem(GuidedSystem):
    @dataclass
    class Config(GuidedSystem.Config):
        n_particles: Annotated[int, Bounds(ge=1, le=1024)] = 4
        """Number of image particles, all updated every step (one batch)."""
        rgb_as_latents: bool = True
        """Optimise latents (True) or RGB pixels encoded by the VAE (False)."""
        height: ImageSide = 512
        """Image height in pixels (latents are height / vae downsampling)."""
        width: ImageSide = 512
        """Image width in pixels."""
        init_std: NonNegativeFloat = 1.0
        """Std of the initial latents (or of the initial RGB logits)."""
        guidance_type: str = "stable-diffusion-vsd-guidance"
        """Registered guidance: stable-diffusion-guidance (SDS) or stable-diffusion-vsd-guidance (VSD)."""
        video_fps: Annotated[int, Bounds(ge=1, le=240)] = 10
        """Frame rate of the optimisation video (one frame per validation)."""

    cfg: Config

    def configure(self) -> None:
        c = self.cfg
        self.build_guidance()
        if getattr(self.guidance.cfg, "view_dependent_prompting", False):
            raise self.guidance.config_error("view_dependent_prompting", "images have no view; set it to false")
        factor = self.guidance.vae_scale_factor
        if c.height % factor or c.width % factor:
            raise self.config_error(
                "height" if c.height % factor else "width",
                f"{c.height}x{c.width} (height x width) must be multiples of the VAE's downsampling factor {factor}",
            )
        if c.rgb_as_latents:
            shape = (c.n_particles, self.guidance.latent_channels, c.height // factor, c.width // factor)
        else:
            shape = (c.n_particles, c.height, c.width, 3)
        self.particles = nn.Parameter(torch.randn(shape) * c.init_std)

    def images_input(self) -> torch.Tensor:
        """What the guidance receives: latents (N, C, h, w) or RGB (N, H, W, 3) in [0, 1]."""
        return self.particles if self.cfg.rgb_as_latents else torch.sigmoid(self.particles)

    def training_losses(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        n = self.cfg.n_particles
        return self.guidance(
            self.images_input(), self.prompt_utils, **null_camera(n, self.device), rgb_as_latents=self.cfg.rgb_as_latents
        )

    @torch.no_grad()
    def decoded(self) -> torch.Tensor:
        """(N, H, W, 3) images in [0, 1]."""
        if self.cfg.rgb_as_latents:
            return self.guidance.decode_latents(self.particles)
        return torch.sigmoid(self.particles)

    def validation_panels(self, batch: Dict[str, Any]) -> List[Panel]:
        return [Panel("rgb", img) for img in self.decoded()]

    def test_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        step = self.current_step
        images = self.decoded()
        if batch_idx == 0 and self.saver.enabled:
            from framework.utils.saving import panel_to_uint8

            for i, img in enumerate(images):
                self.saver.save_image(f"it{step}-test/particle_{i:03d}.png", panel_to_uint8(Panel("rgb", img)))

    def on_test_epoch_end(self) -> None:
        if not self.saver.enabled or self.saver.save_dir is None:
            return
        frames = sorted(
            self.saver.save_dir.glob("it*-val/0000.png"), key=lambda p: int(p.parent.name[2:].split("-")[0])
        )
        if frames:
            self.saver.save_images_as_video(f"it{self.current_step}-test/optimisation.mp4", frames, fps=self.cfg.video_fps)
