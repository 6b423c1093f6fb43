"""``TextTo3DSystem``: what every score-distillation text-to-3D system shares.

A scene (geometry + material + background + renderer) is rendered from random cameras; the guidance turns the renders
into ``loss_<x>`` terms (``loss_sds``; or ``loss_vsd`` and ``loss_lora``); the regularisers of
``systems/regularizers.py`` add theirs. With ``n_particles > 1`` the system holds that many independent scenes
(ProlificDreamer's particles); one is rendered and updated per step, in turn, and all share the guidance (for VSD, one
``unet_lora`` learns the score of all of them).

Module paths of the optimizer's parameter groups are threestudio's (``geometry.encoding``, ``background``,
``guidance``); with several particles a path names that module in every particle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Dict, List

import torch
import torch.nn as nn

from framework.config import Bounds
from framework.utils.export_output import ExportOutput
from framework.utils.saving import Panel
from systems.guided import GuidedSystem
from systems.regularizers import REGULARIZERS

SCENE_PARTS = ("geometry", "material", "background", "renderer")


class Scene(nn.Module):
    """One particle: geometry, material, background and the renderer that combines them."""

    def __init__(self, geometry: nn.Module, material: nn.Module, background: nn.Module, renderer: nn.Module):
        super().__init__()
        self.geometry, self.material, self.background, self.renderer = geometry, material, background, renderer


class TextTo3DSystem(GuidedSystem):
    @dataclass
    class Config(GuidedSystem.Config):
        geometry_type: str = "implicit-volume"
        """Registered geometry."""
        geometry: Any = field(default_factory=dict)
        """Config of the geometry."""
        material_type: str = "no-material"
        """Registered material."""
        material: Any = field(default_factory=dict)
        """Config of the material."""
        background_type: str = "neural-environment-map-background"
        """Registered background."""
        background: Any = field(default_factory=dict)
        """Config of the background."""
        renderer_type: str = "nerf-volume-renderer"
        """Registered renderer."""
        renderer: Any = field(default_factory=dict)
        """Config of the renderer."""
        exporter_type: str = "mesh-exporter"
        """Registered exporter used by --export."""
        n_particles: Annotated[int, Bounds(ge=1, le=1024)] = 1
        """Independent scenes optimised together (VSD particles); one is rendered per step, in turn."""

    cfg: Config

    def configure(self) -> None:
        c = self.cfg
        scenes = []
        for _ in range(c.n_particles):
            geometry = self.build("geometry", c.geometry_type, c.geometry)
            material = self.build("material", c.material_type, c.material)
            background = self.build("background", c.background_type, c.background)
            renderer = self.build(
                "renderer", c.renderer_type, c.renderer, geometry=geometry, material=material, background=background
            )
            scenes.append(Scene(geometry, material, background, renderer))
        self.particles = nn.ModuleList(scenes)
        self.build_guidance()

    # threestudio's attribute names refer to the first particle (the only one, usually).
    @property
    def geometry(self) -> nn.Module:
        return self.particles[0].geometry

    @property
    def material(self) -> nn.Module:
        return self.particles[0].material

    @property
    def background(self) -> nn.Module:
        return self.particles[0].background

    @property
    def renderer(self) -> nn.Module:
        return self.particles[0].renderer

    def param_group_modules(self, path: str) -> List[nn.Module]:
        """A parameter-group path: ``geometry.encoding`` names that module in every particle."""
        head = path.split(".", 1)[0]
        if head in SCENE_PARTS:
            return [p.get_submodule(path) for p in self.particles]
        return [self.get_submodule(path)]

    def particle_of_step(self, step: int) -> int:
        return step % self.cfg.n_particles

    # ------------------------------------------------------------------ training
    def training_losses(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        scene = self.particles[self.particle_of_step(self.global_step)]
        out = scene.renderer(**batch)
        guidance_out = self.guidance(out["comp_rgb"], self.prompt_utils, **batch, rgb_as_latents=False)
        losses: Dict[str, Any] = dict(guidance_out)
        for name, fn in REGULARIZERS.items():
            if self.loss_enabled(name):
                losses[f"loss_{name}"] = fn(out)
        return losses

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _panels(self, batch: Dict[str, Any]) -> List[Panel]:
        panels = []
        for scene in self.particles:
            out = scene.renderer(**batch)
            panels.append(Panel("rgb", out["comp_rgb"][0]))
            if "comp_normal" in out:
                panels.append(Panel("normal", out["comp_normal"][0] * 2.0 - 1.0))
            panels.append(Panel("grayscale", out["opacity"][0, :, :, 0], cmap="gray"))
        return panels

    def validation_panels(self, batch: Dict[str, Any]) -> List[Panel]:
        return self._panels(batch)

    def test_panels(self, batch: Dict[str, Any]) -> List[Panel]:
        return self._panels(batch)

    @torch.no_grad()
    def export_outputs(self) -> List[ExportOutput]:
        """The exporter's files for each particle (under ``particle<i>/`` when there are several)."""
        exporter = self.make_exporter()
        outputs = []
        for i, scene in enumerate(self.particles):
            for out in exporter(scene.geometry, scene.material):
                name = out.filename if self.cfg.n_particles == 1 else f"particle{i}/{out.filename}"
                outputs.append(ExportOutput(name, out.data))
        return outputs
