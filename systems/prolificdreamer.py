"""``prolificdreamer-system``: ProlificDreamer's variational score distillation (VSD), stage 1 (``coarse``: a NeRF).

The VSD guidance returns ``loss_vsd`` (reaching the scene) and ``loss_lora`` (training its ``unet_lora`` and camera
embedding on the renders); both are weighted (``lambda_vsd``, ``lambda_lora``) and minimised by one optimizer in
which the guidance's trainable parameters form the ``guidance`` group. ``n_particles > 1`` optimises several scenes
that share the one ``unet_lora``, as in the paper (threestudio has one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from framework import registry
from systems.text_to_3d import TextTo3DSystem


@registry.register("system", "prolificdreamer-system")
class ProlificDreamerSystem(TextTo3DSystem):
    @dataclass
    class Config(TextTo3DSystem.Config):
        stage: Literal["coarse"] = "coarse"
        """ProlificDreamer stage; 'coarse' (NeRF) is built (geometry and texture stages are not)."""
        guidance_type: str = "stable-diffusion-vsd-guidance"
        """Registered guidance (VSD)."""
