"""``dreamfusion-system``: DreamFusion's score distillation sampling (SDS) of a NeRF."""

from __future__ import annotations

from dataclasses import dataclass

from framework import registry
from systems.text_to_3d import TextTo3DSystem


@registry.register("system", "dreamfusion-system")
class DreamFusionSystem(TextTo3DSystem):
    @dataclass
    class Config(TextTo3DSystem.Config):
        guidance_type: str = "stable-diffusion-guidance"
        """Registered guidance (SDS)."""
