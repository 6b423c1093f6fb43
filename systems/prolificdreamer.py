"""``prolificdreamer-system``: ProlificDreamer's three stages (threestudio's ``stage``).

* ``coarse``: variational score distillation (VSD) of a NeRF. The VSD guidance returns ``loss_vsd`` (reaching the
  scene) and ``loss_lora`` (training its ``unet_lora`` and camera embedding on the renders); both are weighted
  (``lambda_vsd``, ``lambda_lora``) and minimised by one optimizer in which the guidance's trainable parameters form
  the ``guidance`` group. ``n_particles > 1`` optimises several scenes that share the one ``unet_lora``, as in the
  paper (threestudio has one).
* ``geometry``: the NeRF's surface, converted into a ``tetrahedra-sdf-grid`` (``geometry_convert_from``), refined by
  score distillation of its rendered normal map (SDS in threestudio's recipe) with ``lambda_normal_consistency`` and
  ``lambda_laplacian_smoothness``.
* ``texture``: the refined surface fixed (``fix_geometry``), its texture field trained with VSD on the colour.
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
        stage: Literal["coarse", "geometry", "texture"] = "coarse"
        """coarse: the whole scene (a NeRF) from its colour; geometry: a surface from its rendered normals (SDS on
        comp_normal, mesh regularisers); texture: the colour of a fixed surface."""
        guidance_type: str = "stable-diffusion-vsd-guidance"
        """Registered guidance (VSD; threestudio's geometry stage uses stable-diffusion-guidance, SDS)."""

    cfg: Config

    @property
    def stage(self) -> str:
        return self.cfg.stage
