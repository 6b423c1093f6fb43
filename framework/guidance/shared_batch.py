"""VSD's pretrained predictions and LoRA estimate as one UNet call, when one UNet serves both (shared mode).

In shared mode the pretrained prediction is the LoRA UNet with the LoRA switched off and no camera embedding, and the
estimate ``eps_phi`` is the same UNet with both on. Both are evaluated at the same ``x_t`` and ``t`` without grad, so
they can share a batch:

    rows          x_t   t   text                           LoRA strength   camera embedding
    0 .. kB-1     x_t   t   the pretrained model's k sets  0               0 x emb(0)
                            ([cond; uncond], Perp-Neg's negatives, the empty prompt: whatever the base asks)
    kB .. (k+1)B  x_t   t   cond (view-independent)        lora_scale      lora_scale x emb(camera)
    then B more   x_t   t   cond (view-independent)        lora_scale      lora_scale x emb(0)  (camera CFG only)

The LoRA strength is per row (PEFT's ``scaling`` as a (rows, 1, 1) tensor, :meth:`LoraWeights.scaled`) and so is the
camera embedding's output (``ScaledEmbedding`` with a (rows, 1) factor). A zero factor adds an exact zero: the
pretrained rows compute exactly what the pretrained UNet computes (the LoRA update and the camera embedding are
evaluated and multiplied by 0, so finite LoRA and camera weights are assumed, as everywhere). Rows are independent
in every UNet layer (convolutions, group norms and attention act per sample), so the result equals the separate
calls up to the float rounding of batched kernels. On a GPU at batch 1 each UNet call costs its kernel launches
whatever the batch, so one call instead of two saves most of one; the adapter switch of the unbatched path (PEFT
walks every LoRA layer twice per step) is gone too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Tuple

import torch
from torch import Tensor

from framework.guidance.camera_embedding import ScaledEmbedding, class_embedding
from framework.guidance.diffusion import classifier_free_guidance

if TYPE_CHECKING:  # pragma: no cover
    from framework.guidance.vsd import StableDiffusionVSDGuidance


def batched_predict(
    guidance: "StableDiffusionVSDGuidance",
    x: Tensor,
    t: Tensor,
    embeddings: Tensor,
    lora_text: Tensor,
    camera: Tensor,
    scale: float,
) -> Tuple[Tensor, Tensor]:
    """``(eps, eps_phi)`` from one call of the shared UNet: what ``predict(x, t, embeddings)`` returns for the
    pretrained model (kB rows, one per stacked embedding set: [cond; uncond], Perp-Neg's negatives, the empty prompt)
    and the LoRA estimate at the same ``x`` and ``t``.

    Shapes: x (B, 4, h, w), t (B,), embeddings (kB, 77, C), lora_text (B, 77, C) the view-independent prompt, camera
    (B, D). ``scale`` is the LoRA strength of the estimate.
    """
    b = x.shape[0]
    k = embeddings.shape[0] // b
    camera_cfg = guidance.cfg.guidance_scale_lora != 1.0
    n_lora = 2 if camera_cfg else 1
    rows = k + n_lora
    unet = guidance.lora_model.unet
    no_camera = torch.zeros_like(camera)
    labels = [no_camera] * k + [camera] + ([no_camera] if camera_cfg else [])
    gate = torch.cat([torch.zeros(k * b), torch.full((n_lora * b,), float(scale))]).to(x.device)
    embedding = ScaledEmbedding(guidance.camera_embedding, gate[:, None])
    xs, ts = torch.cat([x] * rows), torch.cat([t] * rows)
    with guidance.lora.scaled(gate.to(guidance.lora_compute_dtype())), class_embedding(unet, embedding):
        out = guidance.run_unet(unet, xs, ts, torch.cat([embeddings] + [lora_text] * n_lora),
                                class_labels=torch.cat(labels))
    eps = guidance.schedule.to_eps(out[: k * b], xs[: k * b], ts[: k * b])
    to_eps = guidance.lora_schedule.to_eps
    eps_cam = to_eps(out[k * b : (k + 1) * b], x, t)
    if not camera_cfg:
        return eps, eps_cam
    eps_nocam = to_eps(out[(k + 1) * b :], x, t)
    return eps, classifier_free_guidance(eps_cam, eps_nocam, guidance.cfg.guidance_scale_lora)
