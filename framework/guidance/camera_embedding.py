"""The camera condition of VSD's LoRA model: a vector per view, embedded as the UNet's class embedding.

ProlificDreamer conditions the LoRA model eps_phi on the camera: a ``TimestepEmbedding`` (linear, SiLU, linear) maps
the condition to the UNet's time-embedding width and is set as ``unet.class_embedding``; the UNet adds its output to
the time embedding (``class_labels`` in the forward call). A zero condition is the "no camera" input used for camera
dropout during LoRA training and for camera classifier-free guidance.

Condition types (``camera_condition_type``):

* ``extrinsics``: the camera-to-world matrix, flattened (16 values);
* ``mvp``: the model-view-projection matrix, flattened (16 values);
* ``spherical``: (elevation in radians, sin azimuth, cos azimuth, camera distance) (4 values).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Literal, Optional

import torch
import torch.nn as nn
from torch import Tensor

CameraConditionType = Literal["extrinsics", "mvp", "spherical"]
CONDITION_DIMS = {"extrinsics": 16, "mvp": 16, "spherical": 4}


def camera_condition(
    kind: CameraConditionType,
    c2w: Optional[Tensor] = None,
    mvp_mtx: Optional[Tensor] = None,
    elevation: Optional[Tensor] = None,
    azimuth: Optional[Tensor] = None,
    camera_distances: Optional[Tensor] = None,
) -> Tensor:
    """The (B, D) float32 condition of ``kind`` from the batch's cameras (c2w, mvp_mtx: (B, 4, 4); angles in degrees).

    Example:
        >>> camera_condition("extrinsics", c2w=torch.eye(4)[None]).shape
        torch.Size([1, 16])
    """
    if kind == "extrinsics":
        if c2w is None:
            raise ValueError("camera_condition_type 'extrinsics' needs the batch's c2w (B, 4, 4)")
        cond = c2w.reshape(c2w.shape[0], -1)
    elif kind == "mvp":
        if mvp_mtx is None:
            raise ValueError("camera_condition_type 'mvp' needs the batch's mvp_mtx (B, 4, 4)")
        cond = mvp_mtx.reshape(mvp_mtx.shape[0], -1)
    elif kind == "spherical":
        if elevation is None or azimuth is None or camera_distances is None:
            raise ValueError("camera_condition_type 'spherical' needs elevation, azimuth and camera_distances")
        az = torch.deg2rad(azimuth)
        cond = torch.stack([torch.deg2rad(elevation), torch.sin(az), torch.cos(az), camera_distances], dim=-1)
    else:
        raise ValueError(f"unknown camera_condition_type '{kind}'; use extrinsics, mvp or spherical")
    return cond.detach().to(torch.float32)


def time_embed_dim(unet_config) -> int:
    """Width of the UNet's time embedding (what a class embedding must produce), read from its config."""
    return int(unet_config.time_embedding_dim or 4 * unet_config.block_out_channels[0])


def build_camera_embedding(kind: CameraConditionType, unet_config, zero_init: bool) -> nn.Module:
    """A fp32 ``TimestepEmbedding(CONDITION_DIMS[kind], time_embed_dim)``.

    ``zero_init`` zeroes its last layer, so at the start the LoRA model is exactly its base model with or without a
    camera (eps_phi = eps_pretrained, the paper's initialisation); its first layer still gets gradients after one step.
    """
    from diffusers.models.embeddings import TimestepEmbedding

    emb = TimestepEmbedding(CONDITION_DIMS[kind], time_embed_dim(unet_config)).to(torch.float32)
    if zero_init:
        nn.init.zeros_(emb.linear_2.weight)
        nn.init.zeros_(emb.linear_2.bias)
    return emb


class ScaledEmbedding(nn.Module):
    """``scale * embedding(x)``: the camera embedding at a LoRA strength between 0 and 1 (a temporary wrapper)."""

    def __init__(self, embedding: nn.Module, scale: float):
        super().__init__()
        self.embedding = embedding
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.embedding(x) * self.scale


@contextmanager
def class_embedding(unet: nn.Module, embedding: Optional[nn.Module], scale: float = 1.0) -> Iterator[None]:
    """Set ``unet.class_embedding`` to ``embedding`` (its output times ``scale``) for a call, then restore it.

    Keeping the camera embedding off the UNet between calls lets one UNet serve as the pretrained model (no class
    embedding) and as the LoRA model, and keeps the embedding out of the frozen UNet's dtype casts. At ``scale`` 0
    no class embedding is set at all: the UNet ignores ``class_labels`` and the camera has no effect.
    """
    previous = unet.class_embedding
    if embedding is not None and scale == 0.0:
        embedding = None
    elif embedding is not None and scale != 1.0:
        embedding = ScaledEmbedding(embedding, scale)
    unet.class_embedding = embedding
    try:
        yield
    finally:
        unet.class_embedding = previous
