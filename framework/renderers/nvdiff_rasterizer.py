"""``nvdiff-rasterizer``: the geometry's surface mesh rasterized, shaded by the material, over the background.

threestudio's renderer of the same name and outputs, for mesh geometries (``tetrahedra-sdf-grid``, or any geometry
whose ``isosurface()`` returns a ``Mesh``). Each call:

1. ``mesh = geometry.isosurface()``; its vertices go to clip space with the batch's ``mvp_mtx``;
2. the mesh is rasterized (``framework.renderers.raster_context``: nvdiffrast on CUDA when installed, the PyTorch
   rasterizer otherwise; ``backend`` forces one); the pixel centres' surface points, interpolated vertex normals and
   positions have gradients to the vertices;
3. with ``render_rgb`` (default), the geometry's features at the surface points go to the material (with the
   interpolated normal as ``shading_normal``, the view direction from the camera and the light position), the
   background fills the rest;
4. every image is antialiased across silhouette edges, which is what gives coverage a gradient.

Outputs ``(B, H, W, C)``:

* ``opacity``: coverage (1 inside, 0 outside, fractional along silhouettes);
* ``comp_normal``: ``(n + 1) / 2`` of the unit interpolated world-space vertex normal, 0 on the background (the
  volume renderer's convention: a display image in [0, 1]; ProlificDreamer's geometry stage guides on it);
* ``depth``: distance from the camera to the surface point, 0 on the background (like the volume renderer's depth of
  unit rays, which is weighted by opacity);
* with ``render_rgb``: ``comp_rgb`` (foreground over background), ``comp_rgb_fg`` (foreground times coverage),
  ``comp_rgb_bg`` (the background's colour along each pixel's ray);
* ``mesh``: the ``Mesh`` rendered (its ``normal_consistency()`` and ``laplacian()`` are the geometry stage's
  regularisers).

Keywords: ``bg_color (B, 3)`` or ``(B, H, W, 3)`` replaces the background module's colour (as in the volume
renderer); other keywords (the rest of the camera batch, ``shading``, ``ambient_ratio``) go to the material.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from framework import registry
from framework.config import PositiveFloat
from framework.module import BaseModule
from framework.renderers.raster_context import RasterContext, make_context
from framework.renderers.nerf_volume_renderer import _SubModules


def pixel_ray_directions(mvp_mtx: Tensor, height: int, width: int) -> Tensor:
    """World-space unit directions ``(B, H, W, 3)`` of the rays through the pixel centres of ``mvp_mtx (B, 4, 4)``.

    Unprojects each pixel centre at the near and far planes (``z/w = -1, 1``), in float64.
    """
    inverse = torch.linalg.inv(mvp_mtx.double())
    device = mvp_mtx.device
    x = (2.0 * torch.arange(width, dtype=torch.float64, device=device) + 1.0) / width - 1.0
    y = (2.0 * torch.arange(height, dtype=torch.float64, device=device) + 1.0) / height - 1.0
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    ends = []
    for z in (-1.0, 1.0):
        ndc = torch.stack([xx, yy, torch.full_like(xx, z), torch.ones_like(xx)], -1)  # (H, W, 4)
        world = torch.einsum("bij,hwj->bhwi", inverse, ndc)
        ends.append(world[..., :3] / world[..., 3:])
    return F.normalize(ends[1] - ends[0], dim=-1).to(mvp_mtx.dtype)


@registry.register("renderer", "nvdiff-rasterizer")
class NVDiffRasterizer(BaseModule):
    """Differentiable rasterization of the geometry's isosurface mesh (threestudio's ``nvdiff-rasterizer``)."""

    @dataclass
    class Config:
        radius: PositiveFloat = 1.0
        """Half the side of the scene's bounding box (threestudio's field; the rasterizer draws the whole mesh)."""
        context_type: Literal["gl", "cuda"] = "gl"
        """nvdiffrast's context: gl (OpenGL; EGL on a headless machine) or cuda; unused by the PyTorch back end."""
        backend: Literal["auto", "nvdiffrast", "torch"] = "auto"
        """auto: nvdiffrast for CUDA tensors when it is installed, the PyTorch rasterizer otherwise."""

    cfg: Config

    def configure(self, geometry: Any = None, material: Any = None, background: Any = None, **kwargs: Any) -> None:
        if geometry is None or material is None or background is None:
            raise TypeError("nvdiff-rasterizer needs geometry=, material= and background= modules")
        self.sub_modules = _SubModules(geometry, material, background)
        r = self.cfg.radius
        self.register_buffer("bbox", torch.tensor([[-r, -r, -r], [r, r, r]], dtype=torch.float32))
        self._contexts: Dict[str, RasterContext] = {}

    # ----------------------------------------------------------------------------------------------- sub-modules
    @property
    def geometry(self) -> Any:
        return self.sub_modules.geometry

    @property
    def material(self) -> Any:
        return self.sub_modules.material

    @property
    def background(self) -> Any:
        return self.sub_modules.background

    def set_geometry(self, geometry: Any) -> None:
        self.sub_modules.geometry = geometry

    def set_material(self, material: Any) -> None:
        self.sub_modules.material = material

    def set_background(self, background: Any) -> None:
        self.sub_modules.background = background

    def context(self, device: torch.device) -> RasterContext:
        """The rasterization back end for ``device`` (created on first use there)."""
        name = str(device)
        if name not in self._contexts:
            key = getattr(self, "_prefix", "") or "system.renderer"
            self._contexts[name] = make_context(self.cfg.backend, self.cfg.context_type, device, key)
        return self._contexts[name]

    # --------------------------------------------------------------------------------------------------- render
    def forward(
        self,
        mvp_mtx: Tensor,
        camera_positions: Tensor,
        light_positions: Tensor,
        height: int,
        width: int,
        render_rgb: bool = True,
        bg_color: Optional[Tensor] = None,
        **kwargs: Any,
    ) -> Dict[str, Any]:
        """Render ``B`` views: ``mvp_mtx (B, 4, 4)``, ``camera_positions (B, 3)``, ``light_positions (B, 3)``."""
        batch_size = mvp_mtx.shape[0]
        height, width = int(height), int(width)
        mesh = self.geometry.isosurface()
        ctx = self.context(mesh.v_pos.device)
        tri = mesh.t_pos_idx
        v_clip = ctx.vertex_transform(mesh.v_pos, mvp_mtx.to(mesh.v_pos.device))
        rast = ctx.rasterize(v_clip, tri, (height, width))
        mask = (rast[..., 3:] > 0).to(v_clip.dtype)
        gb_normal = F.normalize(ctx.interpolate(mesh.v_nrm, rast, tri), dim=-1)
        gb_pos = ctx.interpolate(mesh.v_pos, rast, tri)
        cameras = camera_positions.to(gb_pos)[:, None, None, :]
        # every image is antialiased in one call (the edge analysis is shared): channels concatenated, then split
        images = {
            "opacity": mask,
            "comp_normal": torch.lerp(torch.zeros_like(gb_normal), (gb_normal + 1.0) / 2.0, mask),
            "depth": (gb_pos - cameras).norm(dim=-1, keepdim=True) * mask,
        }
        out: Dict[str, Any] = {"mesh": mesh}
        if render_rgb:
            selector = mask[..., 0] > 0
            gb_viewdirs = F.normalize(gb_pos - cameras, dim=-1)
            gb_light = light_positions.to(gb_pos)[:, None, None, :].expand(-1, height, width, -1)
            positions = gb_pos[selector]
            geo_out = self.geometry(positions, output_normal=False)
            extra: Dict[str, Tensor] = {}
            if self.material.requires_normal:
                extra["shading_normal"] = gb_normal[selector]
            rgb_fg = self.material(
                viewdirs=gb_viewdirs[selector],
                positions=positions,
                light_positions=gb_light[selector],
                **extra,
                **geo_out,
                **kwargs,
            )
            gb_rgb_fg = rgb_fg.new_zeros(batch_size, height, width, rgb_fg.shape[-1]).index_put((selector,), rgb_fg)
            dirs = pixel_ray_directions(mvp_mtx, height, width).to(gb_pos)
            comp_rgb_bg = self.background(dirs=dirs)
            if bg_color is None:
                bg = comp_rgb_bg
            else:
                bg = bg_color.to(comp_rgb_bg)
                if bg.dim() == 2:
                    bg = bg[:, None, None, :].expand(-1, height, width, -1)
            images["comp_rgb"] = torch.lerp(bg.to(gb_rgb_fg), gb_rgb_fg, mask)
            images["comp_rgb_fg"] = gb_rgb_fg
            out["comp_rgb_bg"] = comp_rgb_bg
        stacked = ctx.antialias(torch.cat([v.to(v_clip.dtype) for v in images.values()], -1), rast, v_clip, tri)
        for (name, image), part in zip(images.items(), stacked.split([v.shape[-1] for v in images.values()], -1)):
            out[name] = part.to(image.dtype)
        return out
