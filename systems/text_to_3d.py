"""``TextTo3DSystem``: what every score-distillation text-to-3D system shares.

A scene (geometry + material + background + renderer) is rendered from random cameras; the guidance turns the renders
into ``loss_<x>`` terms (``loss_sds``; or ``loss_vsd`` and ``loss_lora``); the regularisers of
``systems/regularizers.py`` add theirs. Systems with stages (ProlificDreamer) train the whole scene (``coarse``), a
surface from its rendered normals (``geometry``: the guidance sees ``comp_normal``, the mesh regularisers apply) or the
colour of a fixed surface (``texture``); a later stage starts from an earlier run's geometry through
``geometry_convert_from`` (``systems/geometry_convert.py``). With ``n_particles > 1`` the system holds that many
independent scenes (ProlificDreamer's particles); one is rendered and updated per step, in turn, and all share the
guidance (for VSD, one ``unet_lora`` learns the score of all of them).

Module paths of the optimizer's parameter groups are threestudio's (``geometry.encoding``, ``background``,
``guidance``); with several particles a path names that module in every particle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Dict, List, Optional

import torch
import torch.nn as nn

from framework.config import Bounds
from framework.errors import ConfigError
from framework.utils.export_output import ExportOutput
from framework.utils.saving import Panel
from systems.geometry_convert import convert_geometries
from systems.guided import GuidedSystem
from systems.regularizers import REGULARIZERS, STAGE_REGULARIZERS

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
        geometry_convert_from: Optional[str] = None
        """A checkpoint of an earlier run (<trial>/ckpts/last.ckpt; LAST in the path: the newest matching trial)
        whose geometry initialises this one (e.g. a stage-1 NeRF becomes a tetrahedra-sdf-grid); ignored when
        resuming or loading system.weights."""
        geometry_convert_inherit_texture: bool = False
        """Also take the earlier geometry's texture field (hash grid and feature network)."""
        geometry_convert_override: Dict[str, Any] = field(default_factory=dict)
        """Changes to the earlier geometry's config before converting it (e.g. isosurface_threshold: 10)."""

    cfg: Config

    @property
    def stage(self) -> str:
        """What is trained: ``coarse`` (the whole scene), ``geometry`` (the surface, from its normals) or ``texture``
        (the colour of a fixed surface). Only systems with a ``stage`` field have the latter two."""
        return "coarse"

    def configure(self) -> None:
        c = self.cfg
        converted = None
        if c.geometry_convert_from and not self.resumed and not c.weights:
            converted = convert_geometries(c, c.n_particles)
        scenes = []
        for i in range(c.n_particles):
            if converted is not None:
                geometry = converted[i]
                self._stepped.append(geometry)  # updated before every step like the modules self.build makes
            else:
                geometry = self.build("geometry", c.geometry_type, c.geometry)
            material = self.build("material", c.material_type, c.material)
            background = self.build("background", c.background_type, c.background)
            renderer = self.build(
                "renderer", c.renderer_type, c.renderer, geometry=geometry, material=material, background=background
            )
            scenes.append(Scene(geometry, material, background, renderer))
        self.particles = nn.ModuleList(scenes)
        if "orient" in STAGE_REGULARIZERS[self.stage] and self.loss_enabled("orient"):
            self._request_normals_for_orient()
        self.build_guidance()

    def _request_normals_for_orient(self) -> None:
        """The orientation loss integrates the geometry's normals along the rays: have every render compute them
        (with no-material nothing else asks for them), or refuse the config before the first step."""
        c = self.cfg
        for scene in self.particles:
            if not scene.renderer.samples_normals:
                raise self.config_error(
                    "loss.lambda_orient",
                    f"the orientation loss needs the normals along volume-rendered rays, which {c.renderer_type} "
                    "does not sample; set it to 0 or render with nerf-volume-renderer",
                )
            if not scene.geometry.has_normal:
                raise self.config_error(
                    "loss.lambda_orient",
                    f"the orientation loss needs normals, which {c.geometry_type} computes only with "
                    f"{self.key('geometry.normal_type')} set; set that to analytic, finite_difference or pred, or "
                    "this weight to 0",
                )
            scene.renderer.request_normals()

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
    def render(self, scene: Scene, batch: Dict[str, Any]) -> Dict[str, Any]:
        """The renderer's outputs for ``batch``; in the geometry stage without colour (``render_rgb=False``)."""
        if self.stage == "geometry":
            return scene.renderer(**batch, render_rgb=False)
        return scene.renderer(**batch)

    def guided_image(self, out: Dict[str, Any]) -> torch.Tensor:
        """What the guidance sees, ``(B, H, W, 3)`` in [0, 1]: the normal map in the geometry stage, else the colour."""
        if self.stage != "geometry":
            return out["comp_rgb"]
        if "comp_normal" not in out:
            raise ConfigError(
                f"config error: system.stage: 'geometry' distils the rendered normal map, which "
                f"{self.cfg.renderer_type} did not return for {self.cfg.geometry_type}; use tetrahedra-sdf-grid with "
                "nvdiff-rasterizer"
            )
        return out["comp_normal"]

    def training_losses(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        scene = self.particles[self.particle_of_step(self.global_step)]
        out = self.render(scene, batch)
        guidance_out = self.guidance(self.guided_image(out), self.prompt_utils, **batch, rgb_as_latents=False)
        losses: Dict[str, Any] = dict(guidance_out)
        for name in STAGE_REGULARIZERS[self.stage]:
            if self.loss_enabled(name):
                losses[f"loss_{name}"] = REGULARIZERS[name](out)
        return losses

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _panels(self, batch: Dict[str, Any]) -> List[Panel]:
        panels = []
        for scene in self.particles:
            out = self.render(scene, batch)
            if "comp_rgb" in out:
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
