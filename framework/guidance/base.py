"""Score-distillation guidance on Stable Diffusion: the template every distillation rule fills in, written once.

One guidance step, for renders ``rgb`` (B, H, W, 3) in [0, 1] of the scene (or latents (B, 4, h, w)), recorded in a
:class:`~framework.guidance.step.DistillationStep`:

1. latents ``x0``: renders resized to ``image_size`` and encoded by the VAE (``scaling_factor`` from the VAE config);
2. ``t ~ U{min_step..max_step}`` per sample, ``eps ~ N(0, I)``;
3. ``x_t`` by the rule's :meth:`~StableDiffusionGuidanceBase.noisy_latents` hook: the forward process
   ``alpha_t x0 + sigma_t eps`` by default, DDIM inversion for ISM and SDI;
4. the pretrained model's separate predictions at ``x_t`` (prompt, negative prompt, and the empty prompt for rules
   that need it) and their guided combination ``eps_cfg`` (:func:`classifier_free_guidance`, one convention; Perp-Neg
   when the prompt processor asks), converted from v to eps where the model predicts v;
5. the rule's :meth:`~StableDiffusionGuidanceBase.update`: the direction ``d`` (SDS ``eps_cfg - eps``, VSD
   ``eps_cfg - eps_phi``, CSD, NFSD, SDS-Bridge, ISM, SDI: their modules);
6. ``grad = w(t) d``, optional clipping of its finite entries to ``[-grad_clip, grad_clip]``; a NaN/Inf (in a
   prediction, a weight or the latents) is kept, so the loss is non-finite and the system's non-finite guard skips
   and reports the step: nothing is zeroed in silence;
7. the reparameterised loss ``0.5 * ||x0 - sg(x0 - grad)||^2 / B``, whose gradient w.r.t. ``x0`` is ``grad / B``
   (the UNet Jacobian is skipped). The loss value is not an objective: watch ``grad_norm``. With ``use_img_loss``
   HiFA's image-space loss is added the same way on the renders.

Frozen models (UNet, VAE, scheduler) are held in a plain dataclass attribute, never in ``state_dict`` or the
optimizer; they follow the module to its device (``_apply``), fp16 on CUDA when ``half_precision_weights``, fp32 on CPU.

Text embeddings come from a prompt processor as ``[cond; uncond]`` (2B, 77, C); the pretrained UNet runs on
``[x_t; x_t]`` with them, so ``eps.chunk(2)`` is ``(eps_text, eps_uncond)``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Annotated, Any, ContextManager, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from framework.guidance.diffusion import (
    NoiseSchedule,
    WeightingStrategy,
    classifier_free_guidance,
    perp_neg_guidance,
)
from framework.guidance.loading import (
    freeze,
    frozen_weights_dtype,
    load_component,
    load_dtype,
    place_frozen,
    unique,
)
from framework.config import Bounds, PositiveFloat, Step, Steps
from framework.errors import ConfigError
from framework.module import BaseModule
from framework.guidance.step import DistillationStep
from framework.schedule import Schedule


@dataclass
class FrozenModels:
    """The pretrained diffusion components; a plain attribute, so never part of the module tree."""

    unet: nn.Module
    """UNet2DConditionModel of ``pretrained_model_name_or_path``."""
    vae: nn.Module
    """AutoencoderKL of ``pretrained_model_name_or_path``."""
    scheduler: Any
    """Its scheduler (read for ``alphas_cumprod``, ``prediction_type``, ``num_train_timesteps``)."""


StepPercent = Annotated[Schedule, Bounds(ge=0, le=1, hint="give a fraction of the timesteps")]
"""A timestep-range end as a fraction of num_train_timesteps (number or schedule, each value in [0, 1])."""


class StableDiffusionGuidanceBase(BaseModule):
    """Shared machinery of the Stable Diffusion score-distillation guidances (not registered itself)."""

    loss_name: str
    """The rule's loss is returned as ``loss_<loss_name>`` (weighted by ``lambda_<loss_name>``); each rule sets it."""
    needs_null: bool = False
    """Whether the rule reads ``eps_null`` (the empty prompt's prediction) besides the negative prompt's."""
    supports_perp_neg: bool = True
    """Whether the rule combines predictions with Perp-Neg when the prompt processor's use_perp_neg is on."""

    @dataclass
    class Config:
        pretrained_model_name_or_path: str = "stabilityai/stable-diffusion-2-1-base"
        """Hub id or local diffusers folder of the pretrained model (UNet, VAE, scheduler are loaded from it)."""
        guidance_scale: float = 100.0
        """Classifier-free guidance scale; each guidance states its convention (see cfg_scale)."""
        min_step_percent: StepPercent = 0.02
        """Lower end of the timestep range as a fraction of num_train_timesteps (number or schedule)."""
        max_step_percent: StepPercent = 0.98
        """Upper end of the timestep range as a fraction of num_train_timesteps (number or schedule)."""
        anneal_start_step: Optional[Step] = None
        """threestudio's VSD form of annealing: from this step on the upper end is max_step_percent_annealed."""
        max_step_percent_annealed: Annotated[float, Bounds(ge=0, le=1, hint="give a fraction of the timesteps")] = 0.5
        """Upper end of the timestep range from anneal_start_step on (with anneal_start_step set)."""
        sqrt_anneal: bool = False
        """HiFA's annealing: t goes deterministically from max to min step with sqrt(step / trainer_max_steps)."""
        trainer_max_steps: Steps = 25000
        """Training length that sqrt_anneal spreads its schedule over."""
        use_img_loss: bool = False
        """HiFA's image-space loss (threestudio's): also return loss_<name>_img, weighted by lambda_<name>_img."""
        weighting_strategy: WeightingStrategy = "sds"
        """w(t): sds = 1 - alpha_bar_t, uniform = 1, fantasia3d = sqrt(alpha_bar_t) (1 - alpha_bar_t)."""
        grad_clip: Optional[Annotated[Schedule, Bounds(gt=0)]] = None
        """Clamp the latent gradient to [-v, v] (number or schedule); null: no clipping."""
        image_size: Optional[Annotated[int, Bounds(ge=8, le=8192)]] = None
        """Square size renders are resized to before VAE encoding; null: the UNet's native size (SD 2.1-base: 512)."""
        view_dependent_prompting: bool = True
        """Use the prompt processor's view-dependent text (front/side/back/overhead) for the pretrained model."""
        half_precision_weights: bool = True
        """Frozen weights in fp16 on CUDA (fp32 on CPU regardless); trainable weights and losses stay fp32."""
        enable_attention_slicing: bool = False
        """diffusers attention slicing ('auto') on the UNets: less memory, slower."""
        enable_channels_last_format: bool = False
        """Store the UNets in channels-last memory format."""
        enable_sequential_cpu_offload: bool = False
        """On CUDA, keep frozen-only models on the CPU and stream each layer in when used (accelerate); slow."""

    cfg: Config

    # ----------------------------------------------------------------------------------------------- set-up
    def configure(self) -> None:
        if not isinstance(getattr(type(self), "loss_name", None), str):
            raise TypeError(f"{type(self).__name__} sets no loss_name: a guidance names its loss (loss_<name>)")
        self.register_buffer("_device_marker", torch.zeros(0), persistent=False)
        self._frozen_device = torch.device("cpu")
        self._frozen_dtype = load_dtype(self.cfg.half_precision_weights)
        self._offloaded: List[nn.Module] = []
        path = self.cfg.pretrained_model_name_or_path
        self.models = FrozenModels(
            unet=self.load_unet(path, "pretrained_model_name_or_path"),
            vae=self.load_vae(path, "pretrained_model_name_or_path"),
            scheduler=self.load_scheduler(path, "pretrained_model_name_or_path"),
        )
        self.schedule = NoiseSchedule(self.models.scheduler, self.key("pretrained_model_name_or_path"))
        self.vae_scale_factor = 2 ** (len(self.models.vae.config.block_out_channels) - 1)
        self.latent_channels = int(self.models.vae.config.latent_channels)
        self.image_size = self.cfg.image_size or self.models.unet.config.sample_size * self.vae_scale_factor
        if self.image_size % self.vae_scale_factor:
            raise ConfigError(
                f"{self.key('image_size')}: {self.image_size} is not a multiple of the VAE's downscale factor "
                f"{self.vae_scale_factor}"
            )
        self.update_step(0, 0)

    def check_prompt_width(self, width: int, key: str) -> None:
        """Refuse, in one line, text embeddings of ``width`` channels when the UNet cross-attends to another width
        (a prompt processor on another model than the guidance); ``key`` is the prompt processor's model key."""
        expected = int(self.models.unet.config.cross_attention_dim)
        if width != expected:
            raise ConfigError(
                f"{key}: its text encoder gives {width}-wide embeddings but the UNet of "
                f"{self.key('pretrained_model_name_or_path')} cross-attends to {expected}; use the same Stable "
                "Diffusion model for the prompt processor and the guidance"
            )

    def load_unet(self, path: str, field: str) -> nn.Module:
        """Load, freeze and apply the memory options to the UNet of ``path``."""
        from diffusers import UNet2DConditionModel

        unet = load_component(
            UNet2DConditionModel, path, "unet", self.key(field), torch_dtype=self._frozen_dtype
        )
        freeze(unet)
        if self.cfg.enable_attention_slicing:
            unet.set_attention_slice("auto")
        if self.cfg.enable_channels_last_format:
            unet.to(memory_format=torch.channels_last)
        return unet

    def load_vae(self, path: str, field: str) -> nn.Module:
        """Load and freeze the VAE of ``path``."""
        from diffusers import AutoencoderKL

        return freeze(load_component(AutoencoderKL, path, "vae", self.key(field), torch_dtype=self._frozen_dtype))

    def load_scheduler(self, path: str, field: str) -> Any:
        """The DDPM scheduler of ``path`` (its betas, timestep count and prediction type)."""
        from diffusers import DDPMScheduler

        return load_component(DDPMScheduler, path, "scheduler", self.key(field))

    # --------------------------------------------------------------------------------------- device, dtype
    def frozen_modules(self) -> List[nn.Module]:
        """Every frozen model this guidance holds outside its module tree (subclasses add theirs)."""
        return [self.models.unet, self.models.vae]

    def offloadable_modules(self) -> List[nn.Module]:
        """Frozen models that may be CPU-offloaded (no trainable weight inside)."""
        return self.frozen_modules()

    def trainable_in_frozen(self) -> List[nn.Parameter]:
        """Trainable parameters living inside frozen models (they keep fp32 when the models are cast)."""
        return []

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        super()._apply(fn, recurse)
        if "_device_marker" in self._buffers and hasattr(self, "models"):  # after configure
            self._sync_frozen(self._device_marker.device)
        return self

    def _sync_frozen(self, device: torch.device) -> None:
        """Move the frozen models to ``device`` in their dtype for it, if they are not there yet."""
        dtype = frozen_weights_dtype(self.cfg.half_precision_weights, device)
        if device == self._frozen_device and dtype == self._frozen_dtype:
            return
        modules = unique(self.frozen_modules())
        if self.cfg.enable_sequential_cpu_offload and device.type == "cuda":
            from accelerate import cpu_offload

            for m in unique(self.offloadable_modules()):
                if all(m is not o for o in self._offloaded):
                    place_frozen([m], torch.device("cpu"), dtype)
                    cpu_offload(m, execution_device=device)
                    self._offloaded.append(m)
            modules = [m for m in modules if all(m is not o for o in self._offloaded)]
        place_frozen(modules, device, dtype, keep=self.trainable_in_frozen())
        self._frozen_device, self._frozen_dtype = device, dtype

    def _ensure_device(self, device: torch.device) -> None:
        if self._device_marker.device != device:
            self.to(device)
        else:
            self._sync_frozen(device)

    # ----------------------------------------------------------------------------------------- schedules
    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        """Evaluate the timestep range and gradient clip for ``global_step``."""
        self.global_step = int(global_step)
        min_p = self.cfg.min_step_percent(global_step)
        max_p = self.cfg.max_step_percent(global_step)
        if self.cfg.anneal_start_step is not None and global_step >= self.cfg.anneal_start_step:
            max_p = self.cfg.max_step_percent_annealed
        if self.cfg.sqrt_anneal:
            progress = min(max(global_step, 0) / max(self.cfg.trainer_max_steps, 1), 1.0) ** 0.5
            start = self.cfg.max_step_percent.points[0][1]
            min_p = max_p = (start - min_p) * (1.0 - progress) + min_p
        n = self.schedule.num_train_timesteps
        self.min_step = min(int(n * min_p), n - 1)
        self.max_step = min(int(n * max_p), n - 1)
        if self.min_step > self.max_step:
            raise ConfigError(
                f"{self.key('min_step_percent')}: {min_p} is above max_step_percent {max_p} at step {global_step}"
            )
        self.grad_clip_val = self.cfg.grad_clip(global_step) if self.cfg.grad_clip is not None else None

    def sample_timesteps(self, batch_size: int, device: torch.device) -> Tensor:
        """(B,) integer timesteps, uniform in ``[min_step, max_step]``, one per sample."""
        return torch.randint(self.min_step, self.max_step + 1, (batch_size,), device=device, dtype=torch.long)

    # ---------------------------------------------------------------------------------------- encoding
    def encode_images(self, imgs: Tensor) -> Tensor:
        """VAE latents (B, 4, h, w), fp32, of images (B, 3, H, W) in [0, 1]: a posterior sample times scaling_factor."""
        vae = self.models.vae
        posterior = vae.encode((imgs * 2.0 - 1.0).to(next(vae.parameters()).dtype)).latent_dist
        return (posterior.sample() * vae.config.scaling_factor).to(torch.float32)

    def decode_latents(self, latents: Tensor) -> Tensor:
        """Images (B, H, W, 3) in [0, 1], fp32, of latents (B, 4, h, w) (divided by scaling_factor, VAE-decoded)."""
        self._ensure_device(latents.device)
        vae = self.models.vae
        z = (latents / vae.config.scaling_factor).to(next(vae.parameters()).dtype)
        images = vae.decode(z).sample.to(torch.float32)
        return ((images + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1)

    def prepare_latents(self, rgb: Tensor, rgb_as_latents: bool) -> Tuple[Tensor, Optional[Tensor]]:
        """Latents at the UNet's working size from renders (B, H, W, 3), or from latents (B, 4, h, w); and the
        renders resized to the working size (B, 3, H, W) (None for latents)."""
        if rgb_as_latents:
            size = self.image_size // self.vae_scale_factor
            latents = rgb.to(torch.float32)
            if latents.shape[-2:] != (size, size):
                latents = F.interpolate(latents, (size, size), mode="bilinear", align_corners=False)
            return latents, None
        imgs = rgb.permute(0, 3, 1, 2).to(torch.float32)
        if imgs.shape[-2:] != (self.image_size, self.image_size):
            imgs = F.interpolate(imgs, (self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return self.encode_images(imgs), imgs

    # ------------------------------------------------------------------------------------------ UNet calls
    @staticmethod
    def run_unet(
        unet: nn.Module, x: Tensor, t: Tensor, text_embeddings: Tensor, class_labels: Optional[Tensor] = None
    ) -> Tensor:
        """Raw UNet output in fp32; inputs cast to the UNet's dtype (camera labels stay fp32 for the fp32 embedding)."""
        dtype = next(unet.parameters()).dtype  # conv_in's; ModelMixin.dtype walks every module (ms per call)
        out = unet(x.to(dtype), t, encoder_hidden_states=text_embeddings.to(dtype), class_labels=class_labels)
        return out.sample.to(torch.float32)

    def cfg_scale(self) -> float:
        """``guidance_scale`` as the diffusers-convention scale ``s`` of :func:`classifier_free_guidance`.

        The base reads ``guidance_scale`` in the diffusers form; a guidance whose threestudio namesake uses another
        form converts it here, once (SDS: threestudio's ``s'`` is ``s = s' + 1``).
        """
        return self.cfg.guidance_scale

    def perp_neg_scale(self) -> float:
        """The scale of Perp-Neg's combination ``eps_uncond + s (e_pos + ...)``: ``guidance_scale`` as written, for
        every rule (threestudio reads it so in SDS and the unified guidance alike, without SDS's ``+ 1``)."""
        return self.cfg.guidance_scale

    def pretrained_context(self) -> ContextManager:
        """Context for calls of the pretrained UNet (VSD's shared mode switches the LoRA off in it)."""
        return contextlib.nullcontext()

    def predict(self, x: Tensor, t: Tensor, embeddings: Tensor) -> Tensor:
        """Pretrained noise predictions (kB, C, h, w) at ``x`` (B, C, h, w), ``t`` (B,) for k stacked embedding sets
        (kB, N, C), in one UNet call; v-predictions are converted to eps."""
        k = embeddings.shape[0] // x.shape[0]
        xs, ts = torch.cat([x] * k), torch.cat([t] * k)
        with self.pretrained_context():
            out = self.run_unet(self.models.unet, xs, ts, embeddings)
        return self.schedule.to_eps(out, xs, ts)

    def guided_prediction(self, step: DistillationStep, x: Tensor, t: Tensor, scale: float,
                          perp_scale: float) -> Dict[str, Tensor]:
        """The pretrained model's predictions at ``(x, t)``: ``eps_text``, ``eps_uncond``, ``eps_null`` (rules with
        ``needs_null``) and ``eps_cfg``, CFG with diffusers scale ``scale`` or, with Perp-Neg, its combination at
        ``perp_scale``. The prompts are the step's; one UNet call for all of them."""
        b = x.shape[0]
        pu = step.prompt_utils
        if pu.use_perp_neg:
            if not self.supports_perp_neg:
                raise ConfigError(
                    f"system.prompt_processor.use_perp_neg: {type(self).__name__} does not combine predictions with "
                    "Perp-Neg (SDS, VSD, SDI and ISM do); set it to false"
                )
            embeddings, weights = pu.get_text_embeddings_perp_neg(step.elevation, step.azimuth, step.camera_distances)
        else:
            embeddings, weights = step.text_embeddings, None
        null_separate = self.needs_null and pu.negative_prompt != ""
        if null_separate:
            embeddings = torch.cat([embeddings, pu.get_null_embeddings(b, x.device)])
        eps = self.predict(x, t, embeddings)
        out = {"eps_text": eps[:b], "eps_uncond": eps[b : 2 * b]}
        if self.needs_null:
            out["eps_null"] = eps[-b:] if null_separate else out["eps_uncond"]
        if weights is None:
            out["eps_cfg"] = classifier_free_guidance(out["eps_text"], out["eps_uncond"], scale)
        else:
            negs = eps[2 * b : 4 * b].view(2, b, *eps.shape[1:]).transpose(0, 1)  # (B, 2, ...)
            out["eps_cfg"] = perp_neg_guidance(out["eps_text"], out["eps_uncond"], negs, weights, perp_scale)
        return out

    # ------------------------------------------------------------------------------------------ rule hooks
    def noisy_latents(self, step: DistillationStep) -> None:
        """Set ``step.noisy_latents``: ``x_t = alpha_t x0 + sigma_t eps`` (the forward process). ISM and SDI reach
        ``x_t`` by DDIM inversion instead (and set ``step.noise`` to the noise it implies)."""
        step.noisy_latents = self.schedule.add_noise(step.latents.detach(), step.noise, step.t)

    def pretrained_predictions(self, step: DistillationStep) -> None:
        """Fill in the step's pretrained predictions at ``x_t`` (:meth:`guided_prediction` with this rule's scales)."""
        for key, value in self.guided_prediction(
            step, step.noisy_latents, step.t, self.cfg_scale(), self.perp_neg_scale()
        ).items():
            setattr(step, key, value)

    def update(self, step: DistillationStep, **kwargs: Any) -> Tuple[Tensor, Dict[str, Any]]:
        """The rule: the direction (B, C, h, w, no grad) that ``w(t)`` multiplies, and extra outputs (``loss_lora``).
        ``kwargs`` are the call's other keyword arguments (VSD: ``lora_scale``)."""
        raise NotImplementedError

    def weight(self, step: DistillationStep) -> Tensor:
        """``w(t)`` shaped (B, 1, 1, 1), by ``weighting_strategy``."""
        return self.schedule.weight(step.t, self.cfg.weighting_strategy, step.latents.ndim)

    # ------------------------------------------------------------------------------------------- the step
    def reparameterised_loss(self, latents: Tensor, grad: Tensor) -> Tuple[Tensor, Tensor]:
        """``(0.5 ||x0 - sg(x0 - grad)||^2 / B, grad)`` after the scheduled clipping of ``grad``.

        Only finite entries are clipped: a NaN or Inf in ``grad`` stays, so the loss is NaN/Inf and the system's
        non-finite guard skips and reports the step (``nan_to_num`` or clipping an Inf would hide a broken
        prediction as a zero or bounded update).
        """
        if self.grad_clip_val is not None:
            grad = torch.where(torch.isfinite(grad), grad.clamp(-self.grad_clip_val, self.grad_clip_val), grad)
        target = (latents - grad).detach()
        loss = 0.5 * F.mse_loss(latents, target, reduction="sum") / latents.shape[0]
        return loss, grad

    @torch.no_grad()
    def image_loss_gradient(self, step: DistillationStep) -> Tensor:
        """HiFA's image-space update (threestudio's ``use_img_loss``), (B, 3, H, W):
        ``w(t) (image_baseline - decode(x0_hat(eps_cfg))) alpha_t / sigma_t``, where ``x0_hat(eps) =
        (x_t - sigma_t eps) / alpha_t`` and the baseline image is the render itself, or the decoded clean estimate of
        ``step.baseline`` (VSD: ``eps_phi``)."""
        alpha, sigma = self.schedule.alpha_sigma(step.t, step.latents.ndim)

        def decoded(eps: Tensor) -> Tensor:
            return self.decode_latents((step.noisy_latents - sigma * eps) / alpha).permute(0, 3, 1, 2)

        baseline = step.images if step.baseline is None else decoded(step.baseline)
        return self.weight(step) * (baseline.detach() - decoded(step.eps_cfg)) * alpha / sigma

    def forward(
        self,
        rgb: Tensor,
        prompt_utils: Any,
        elevation: Tensor,
        azimuth: Tensor,
        camera_distances: Tensor,
        c2w: Optional[Tensor] = None,
        mvp_mtx: Optional[Tensor] = None,
        rgb_as_latents: bool = False,
        t: Optional[Tensor] = None,
        noise: Optional[Tensor] = None,
        **kwargs: Any,
    ) -> Dict[str, Any]:
        """One guidance step. Returns ``loss_<loss_name>``, ``grad_norm``, ``min_step``, ``max_step`` (+ the rule's
        extras; ``loss_<loss_name>_img`` with ``use_img_loss``).

        ``t`` (B,) and ``noise`` (B, 4, h, w) fix the draws (tests, toy studies); other keyword arguments of the
        system's batch are handed to the rule's ``update`` (VSD: ``lora_scale``) and otherwise ignored.
        """
        self._ensure_device(rgb.device)
        if self.cfg.use_img_loss and rgb_as_latents:
            raise ConfigError(
                f"{self.key('use_img_loss')}: HiFA's image loss needs renders, not latents; set rgb_as_latents false "
                "(system.rgb_as_latents) or use_img_loss false"
            )
        latents, images = self.prepare_latents(rgb, rgb_as_latents)
        batch_size = latents.shape[0]
        t = self.sample_timesteps(batch_size, latents.device) if t is None else t.to(latents.device).long()
        noise = torch.randn_like(latents) if noise is None else noise.to(latents)
        step = DistillationStep(
            latents, images, t, noise, prompt_utils, elevation, azimuth, camera_distances, c2w, mvp_mtx
        )
        step.text_embeddings = prompt_utils.get_text_embeddings(
            elevation, azimuth, camera_distances, view_dependent_prompting=self.cfg.view_dependent_prompting
        )
        with torch.no_grad():
            self.noisy_latents(step)
            self.pretrained_predictions(step)
        direction, extra = self.update(step, **kwargs)
        grad = self.weight(step) * direction
        loss, grad = self.reparameterised_loss(latents, grad)
        out = {f"loss_{self.loss_name}": loss, **extra}
        if self.cfg.use_img_loss:
            out[f"loss_{self.loss_name}_img"], _ = self.reparameterised_loss(images, self.image_loss_gradient(step))
        return {**out, "grad_norm": grad.norm(), "min_step": self.min_step, "max_step": self.max_step}
