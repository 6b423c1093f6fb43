"""Variational Score Distillation (ProlificDreamer, arXiv 2305.16213) with Stable Diffusion.

The update of each particle is ``grad_x0 = w(t) (eps_cfg(x_t, y, t) - eps_phi(x_t, y, c, t))``: the baseline is the
score of the particles' own renders, learnt online by ``eps_phi``, a LoRA of a Stable Diffusion UNet
(``pretrained_model_name_or_path_lora``) conditioned on the camera ``c`` through a class embedding.

* ``eps_phi`` at use time: the camera-conditioned prediction; with ``guidance_scale_lora`` s_l != 1,
  ``eps_nocam + s_l (eps_cam - eps_nocam)`` (the no-camera half is only run then). Text: the view-independent prompt.
  A v-prediction LoRA model is converted to eps with its own scheduler.
* ``loss_lora``: the diffusion loss of ``eps_phi`` on the detached latents, fresh ``t ~ U{0..T-1}`` and fresh noise,
  target eps or v by the LoRA scheduler's ``prediction_type``, the camera zeroed per sample with probability
  ``lora_camera_dropout`` (when ``lora_cfg_training``), ``lora_n_timestamp_samples`` draws per latent.
* ``lora_train_on_estimate``: train on the estimate's own ``x_t`` and ``t`` instead, so one LoRA forward (with grad)
  serves both; the LoRA then only sees ``t`` in ``[min_step, max_step]``. With s_l = 1 no no-camera prediction exists
  and camera dropout is skipped; with s_l != 1 each sample's loss uses the camera or no-camera half as dropout says.
* Shared UNet (``share_unet`` and equal model paths): one UNet; the pretrained branch runs with the adapters
  switched off and without the camera embedding, which is exactly the pretrained model, saving a whole UNet of memory.

``loss_vsd`` reaches the scene only through the latents; ``loss_lora`` reaches only the LoRA and camera embedding
(the latents are detached), so the system can sum them and step one optimizer. The trainable parameters are
``self.lora`` (the LoRA matrices) and ``self.camera_embedding``; nothing else of the diffusion model is in the
module tree.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from framework import registry
from framework.config import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Probability, Steps
from framework.errors import CheckpointError, ConfigError
from framework.guidance.base import StableDiffusionGuidanceBase
from framework.guidance.camera_embedding import (
    CameraConditionType,
    build_camera_embedding,
    camera_condition,
    class_embedding,
)
from framework.guidance.diffusion import NoiseSchedule, classifier_free_guidance
from framework.guidance.lora import LoraWeights, inject_lora, read_safetensors
from framework.guidance.lora_fit import lora_fit
from framework.guidance.step import DistillationStep

CAMERA_EMBEDDING_FILE = "camera_embedding.safetensors"


@dataclass
class LoraModel:
    """The LoRA model's frozen parts (plain attribute, outside the module tree); ``unet`` may be the pretrained one."""

    unet: nn.Module
    """UNet carrying the LoRA adapter."""
    scheduler: Any
    """Scheduler of ``pretrained_model_name_or_path_lora`` (its prediction type sets the LoRA target)."""
    shared: bool
    """Whether ``unet`` is also the pretrained UNet."""


@registry.register("guidance", "stable-diffusion-vsd-guidance")
class StableDiffusionVSDGuidance(StableDiffusionGuidanceBase):
    """VSD: returns ``loss_vsd``, ``loss_lora``, ``grad_norm``, ``min_step``, ``max_step``, and every
    ``lora_fit_every`` steps the ``lora_fit/*`` diagnostic (``lora_fit/ratio`` on the progress bar)."""

    loss_name = "vsd"
    progress_bar_keys = ("lora_fit/ratio",)
    sparse_keys = ("lora_fit/",)

    @dataclass
    class Config(StableDiffusionGuidanceBase.Config):
        pretrained_model_name_or_path_lora: str = "stabilityai/stable-diffusion-2-1"
        """Hub id or local diffusers folder of the LoRA model's base UNet (may predict v, the pretrained eps)."""
        share_unet: bool = True
        """One UNet for both branches when the two model paths are equal (saves a UNet); false: two copies."""
        guidance_scale: float = 7.5
        """Classifier-free guidance scale of the pretrained model (diffusers convention)."""
        guidance_scale_lora: float = 1.0
        """Camera CFG of the LoRA model, eps_nocam + s (eps_cam - eps_nocam); 1.0 runs the camera branch only."""
        lora_scale: NonNegativeFloat = 1.0
        """Strength of the learnt adaptation (LoRA update and camera embedding output) in every LoRA-model call:
        0 is exactly the base UNet, trained or not; 1 full; also per call (lora_scale=)."""
        lora_rank: PositiveInt = 4
        """LoRA rank r."""
        lora_alpha: PositiveFloat = 4.0
        """LoRA alpha; the update is scaled by alpha / r."""
        lora_target_modules: List[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
        """Attention projections that get a LoRA (every attention layer, self and cross)."""
        lora_weights_path: Optional[str] = None
        """Folder written by save_lora to start the LoRA and camera embedding from; null: fresh (B = 0)."""
        lora_cfg_training: bool = True
        """Drop the camera condition per sample in LoRA training (teaches the no-camera prediction for camera CFG)."""
        lora_camera_dropout: Probability = 0.1
        """Per-sample probability of zeroing the camera condition when lora_cfg_training."""
        lora_n_timestamp_samples: PositiveInt = 1
        """Timesteps drawn per latent for the LoRA loss."""
        lora_train_on_estimate: bool = False
        """Train the LoRA on the estimate's x_t and t: one LoRA forward serves both (t then in [min, max] step)."""
        camera_condition_type: CameraConditionType = "extrinsics"
        """LoRA model's camera condition: extrinsics (c2w), mvp, spherical (elevation, sin/cos azimuth, distance)."""
        zero_init_camera_embedding: bool = True
        """Zero the camera embedding's last layer, so eps_phi starts as its base UNet; false: threestudio's init."""
        lora_fit_every: Optional[Steps] = 100
        """Measure the LoRA fit (lora_fit/* logs, docs/guidance.md) at steps N-1, 2N-1, ...; null: never. Make N a
        multiple of trainer.log_every_n_steps so that every measurement is written."""
        lora_fit_timesteps: List[NonNegativeInt] = field(default_factory=lambda: [100, 300, 500, 700, 900])
        """The fixed timesteps of the LoRA-fit diagnostic."""
        lora_fit_seed: NonNegativeInt = 0
        """Seed of the diagnostic's fixed noise."""

    cfg: Config

    # ----------------------------------------------------------------------------------------------- set-up
    def configure(self) -> None:
        super().configure()
        cfg = self.cfg
        paths = cfg.pretrained_model_name_or_path, cfg.pretrained_model_name_or_path_lora
        shared = cfg.share_unet and _same_model(*paths)
        if shared:
            self.lora_model = LoraModel(self.models.unet, self.models.scheduler, shared=True)
        else:
            path = cfg.pretrained_model_name_or_path_lora
            self.lora_model = LoraModel(
                self.load_unet(path, "pretrained_model_name_or_path_lora"),
                self.load_scheduler(path, "pretrained_model_name_or_path_lora"),
                shared=False,
            )
        self.lora_schedule = NoiseSchedule(self.lora_model.scheduler, self.key("pretrained_model_name_or_path_lora"))
        if cfg.lora_train_on_estimate:
            if cfg.lora_n_timestamp_samples != 1:
                raise ConfigError(
                    f"{self.key('lora_n_timestamp_samples')}: must be 1 with lora_train_on_estimate (the estimate "
                    "has one timestep per sample)"
                )
            if not self.lora_schedule.same_forward_process(self.schedule):
                raise ConfigError(
                    f"{self.key('lora_train_on_estimate')}: the two models' schedulers noise differently, so the "
                    "estimate's x_t is no training sample of the LoRA model; set it to false"
                )
        if self.lora_model.unet.config.cross_attention_dim != self.models.unet.config.cross_attention_dim:
            raise ConfigError(
                f"{self.key('pretrained_model_name_or_path_lora')}: its text width "
                f"{self.lora_model.unet.config.cross_attention_dim} differs from the pretrained model's "
                f"{self.models.unet.config.cross_attention_dim}; both must share a text encoder"
            )
        inject_lora(self.lora_model.unet, cfg.lora_rank, cfg.lora_alpha, cfg.lora_target_modules)
        self.lora = LoraWeights(self.lora_model.unet)
        self.camera_embedding = build_camera_embedding(
            cfg.camera_condition_type, self.lora_model.unet.config, cfg.zero_init_camera_embedding
        )
        if cfg.lora_weights_path:
            self.load_lora(cfg.lora_weights_path)
        n = self.lora_schedule.num_train_timesteps
        bad = [t for t in cfg.lora_fit_timesteps if not 0 <= t < n]
        if bad or not cfg.lora_fit_timesteps:
            raise ConfigError(
                f"{self.key('lora_fit_timesteps')}: {bad[0] if bad else 'an empty list'} is no timestep of the LoRA "
                f"model (0 to {n - 1}); give a few timesteps such as [100, 300, 500, 700, 900]"
            )
        self._lora_fit_step = -1

    def frozen_modules(self) -> List[nn.Module]:
        return super().frozen_modules() + [self.lora_model.unet]

    def offloadable_modules(self) -> List[nn.Module]:
        return [m for m in super().frozen_modules() if m is not self.lora_model.unet]

    def trainable_in_frozen(self) -> List[nn.Parameter]:
        return list(self.lora.parameters())

    def pretrained_context(self) -> ContextManager:
        # Shared UNet: the pretrained branch is the base model (adapters off; no class embedding outside LoRA calls).
        return self.lora.disabled() if self.lora_model.shared else contextlib.nullcontext()

    # ---------------------------------------------------------------------------------------- LoRA model
    def lora_forward(self, x: Tensor, t: Tensor, text: Tensor, camera: Tensor, scale: float) -> Tensor:
        """Raw LoRA-model output (fp32) with camera condition ``camera`` (B, D) at strength ``scale``: the LoRA update
        and the camera embedding's output are both multiplied by it, so 0 is exactly the base UNet."""
        unet = self.lora_model.unet
        with self.lora.scaled(scale), class_embedding(unet, self.camera_embedding, scale):
            return self.run_unet(unet, x, t, text, class_labels=camera)

    def lora_eps(self, noisy: Tensor, t: Tensor, text: Tensor, camera: Tensor, scale: float) -> Tensor:
        """``eps_phi``: camera-conditioned eps, or camera CFG with ``guidance_scale_lora`` when it is not 1."""
        eps_cam, eps_nocam = self._lora_eps_halves(noisy, t, text, camera, scale)
        if eps_nocam is None:
            return eps_cam
        return classifier_free_guidance(eps_cam, eps_nocam, self.cfg.guidance_scale_lora)

    def _lora_outputs(
        self, noisy: Tensor, t: Tensor, text: Tensor, camera: Tensor, scale: float
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Raw outputs with the camera and, when camera CFG is on, without it (one batched call)."""
        if self.cfg.guidance_scale_lora == 1.0:
            return self.lora_forward(noisy, t, text, camera, scale), None
        out = self.lora_forward(
            torch.cat([noisy] * 2), torch.cat([t] * 2), torch.cat([text] * 2),
            torch.cat([camera, torch.zeros_like(camera)]), scale,
        )
        cam, nocam = out.chunk(2)
        return cam, nocam

    def _lora_eps_halves(
        self, noisy: Tensor, t: Tensor, text: Tensor, camera: Tensor, scale: float
    ) -> Tuple[Tensor, Optional[Tensor]]:
        cam, nocam = self._lora_outputs(noisy, t, text, camera, scale)
        to_eps = self.lora_schedule.to_eps
        return to_eps(cam, noisy, t), (to_eps(nocam, noisy, t) if nocam is not None else None)

    def lora_training_loss(
        self, latents: Tensor, text: Tensor, camera: Tensor, t: Tensor, noise: Tensor, keep_camera: Tensor,
        scale: Optional[float] = None,
    ) -> Tensor:
        """Diffusion loss of the LoRA model on detached ``latents`` at timesteps ``t`` with ``noise``.

        Shapes: latents/noise (N, 4, h, w), text (N, 77, C), camera (N, D), t and keep_camera (N,).
        Target: ``noise`` for eps models, ``v`` for v models (the LoRA scheduler's ``prediction_type``).
        """
        scale = self.cfg.lora_scale if scale is None else scale
        latents = latents.detach()
        noisy = self.lora_schedule.add_noise(latents, noise, t)
        target = self.lora_schedule.training_target(latents, noise, t)
        pred = self.lora_forward(noisy, t, text, camera * keep_camera[:, None].to(camera.dtype), scale)
        return F.mse_loss(pred, target.to(torch.float32), reduction="mean")

    def _keep_camera(self, n: int, device: torch.device) -> Tensor:
        if not self.cfg.lora_cfg_training or self.cfg.lora_camera_dropout == 0.0:
            return torch.ones(n, dtype=torch.bool, device=device)
        return torch.rand(n, device=device) >= self.cfg.lora_camera_dropout

    # ------------------------------------------------------------------------------------------- the step
    def update(
        self, step: DistillationStep, lora_scale: Optional[float] = None, **kwargs: Any
    ) -> Tuple[Tensor, Dict[str, Any]]:
        eps_phi, extra = self.estimate(step, lora_scale)
        step.baseline = eps_phi
        return step.eps_cfg - eps_phi, extra

    def estimate(self, step: DistillationStep, lora_scale: Optional[float] = None) -> Tuple[Tensor, Dict[str, Any]]:
        """``eps_phi`` at the step's ``x_t`` (no grad) and the LoRA loss (``loss_lora``, with the diagnostic)."""
        scale = self.cfg.lora_scale if lora_scale is None else float(lora_scale)
        b = step.latents.shape[0]
        text = step.prompt_utils.get_text_embeddings(
            step.elevation, step.azimuth, step.camera_distances, view_dependent_prompting=False
        )[:b]
        camera = camera_condition(
            self.cfg.camera_condition_type, step.c2w, step.mvp_mtx, step.elevation, step.azimuth, step.camera_distances
        ).to(step.latents.device)
        fit = self.lora_fit_due(step, text, camera, scale)
        if self.cfg.lora_train_on_estimate:
            eps_phi, extra = self._estimate_and_train(step, text, camera, scale)
            return eps_phi, {**extra, **fit}
        with torch.no_grad():
            eps_phi = self.lora_eps(step.noisy_latents, step.t, text, camera, scale)
        n = self.cfg.lora_n_timestamp_samples
        latents = step.latents.detach().repeat(n, 1, 1, 1)
        t = torch.randint(0, self.lora_schedule.num_train_timesteps, (b * n,), device=latents.device)
        noise = torch.randn_like(latents)
        keep = self._keep_camera(b * n, latents.device)
        loss_lora = self.lora_training_loss(latents, text.repeat(n, 1, 1), camera.repeat(n, 1), t, noise, keep, scale)
        return eps_phi, {"loss_lora": loss_lora, **fit}

    def lora_fit_due(self, step: DistillationStep, text: Tensor, camera: Tensor, scale: float) -> Dict[str, float]:
        """The LoRA-fit diagnostic (:mod:`framework.guidance.lora_fit`) on this step's latents, once at steps
        N-1, 2N-1, ... (N = ``lora_fit_every``, the steps Lightning writes logs at); an empty dict otherwise.
        Measured before this step's LoRA update, on the latents this step trains on."""
        every = self.cfg.lora_fit_every
        if every is None or (self.global_step + 1) % every or self._lora_fit_step == self.global_step:
            return {}
        self._lora_fit_step = self.global_step
        return lora_fit(self.lora_forward, self.lora_schedule, step.latents, text, camera,
                        self.cfg.lora_fit_timesteps, scale, self.cfg.lora_fit_seed)

    def _estimate_and_train(
        self, step: DistillationStep, text: Tensor, camera: Tensor, scale: float
    ) -> Tuple[Tensor, Dict[str, Any]]:
        """One LoRA forward with grad at the estimate's x_t, t: its detached eps is eps_phi, its error trains it."""
        cam, nocam = self._lora_outputs(step.noisy_latents, step.t, text, camera, scale)
        target = self.lora_schedule.training_target(step.latents.detach(), step.noise, step.t)
        if nocam is None:
            pred = cam
        else:
            keep = self._keep_camera(cam.shape[0], cam.device).view(-1, 1, 1, 1)
            pred = torch.where(keep, cam, nocam)
        loss_lora = F.mse_loss(pred, target, reduction="mean")
        with torch.no_grad():
            to_eps = self.lora_schedule.to_eps
            eps_cam = to_eps(cam.detach(), step.noisy_latents, step.t)
            if nocam is None:
                eps_phi = eps_cam
            else:
                eps_nocam = to_eps(nocam.detach(), step.noisy_latents, step.t)
                eps_phi = classifier_free_guidance(eps_cam, eps_nocam, self.cfg.guidance_scale_lora)
        return eps_phi, {"loss_lora": loss_lora}

    # ------------------------------------------------------------------------------------- save and load
    def save_lora(self, directory: str | os.PathLike) -> Path:
        """Write the LoRA (diffusers format with adapter metadata) and the camera embedding into ``directory``."""
        from safetensors.torch import save_file

        path = self.lora.save(directory)
        state = {
            k: v.detach().to(torch.float32).cpu().contiguous() for k, v in self.camera_embedding.state_dict().items()
        }
        save_file(
            state,
            str(Path(directory) / CAMERA_EMBEDDING_FILE),
            metadata={"camera_condition_type": self.cfg.camera_condition_type},
        )
        return path

    @torch.no_grad()
    def load_lora(self, directory: str | os.PathLike) -> None:
        """Load what :meth:`save_lora` wrote; a camera embedding of another condition type is an error."""
        self.lora.load(directory)
        cam_path = Path(directory) / CAMERA_EMBEDDING_FILE
        if not cam_path.is_file():
            return
        state, meta = read_safetensors(cam_path, "camera embedding")
        kind = (meta or {}).get("camera_condition_type")
        if kind is not None and kind != self.cfg.camera_condition_type:
            raise ConfigError(
                f"{self.key('camera_condition_type')}: is '{self.cfg.camera_condition_type}' but {cam_path} was "
                f"trained with '{kind}'; set camera_condition_type: {kind}"
            )
        try:
            self.camera_embedding.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"{cam_path} does not fit this camera embedding: {str(e).splitlines()[0]}") from None


def _same_model(a: str, b: str) -> bool:
    """Whether two model names point at the same model (equal ids, or the same local folder)."""
    if a == b:
        return True
    return os.path.isdir(a) and os.path.isdir(b) and os.path.samefile(a, b)
