"""``mesh-exporter``: the geometry's surface as a textured or vertex-coloured mesh file (threestudio's fields).

Interface of every exporter::

    exporter = registry.find("exporter", name)(cfg)
    outputs = exporter(geometry, material)        # -> List[ExportOutput] (framework.utils.export_output)
    for out in outputs: out.write(folder / out.filename)   # out.data: the file's bytes here

The mesh is ``geometry.isosurface()`` (marching cubes for the implicit volume, marching tetrahedra for DMTet; any
geometry whose ``isosurface()`` returns a ``Mesh``). Colours are the material's unlit base colour at surface points,
``material.export(**geometry.export(points))["albedo"]``. Formats (``fmt``, one or a list):

* ``obj-mtl`` (threestudio's default): ``<save_name>.obj`` + ``.mtl`` + ``texture_kd.<texture_format>``. Needs
  ``save_uv`` for a texture: UVs from xatlas (``xatlas_chart_options``, ``xatlas_pack_options``: attributes of
  xatlas' ``ChartOptions``/``PackOptions``; ``resolution`` defaults to ``texture_size`` and ``padding`` to 2 texels),
  then the albedo baked into a ``texture_size`` square texture by rasterizing in UV space
  (``framework.exporters.texture_bake``: charts padded with the field's own values, gaps filled from the nearest
  chart). Without ``save_texture``: UVs and a plain white material.
* ``obj``: vertex colours (``save_texture``) in ``v x y z r g b`` lines, UVs when ``save_uv`` (threestudio's).
* ``ply``: binary PLY with 8-bit vertex colours (``save_texture``); PLY carries no UVs, so ``save_uv`` does not
  apply to it.
* ``glb``: binary glTF with the baked texture (``save_uv`` and ``save_texture``), or vertex colours
  (``save_texture`` without ``save_uv``).

``save_normal`` adds the mesh's area-weighted vertex normals to every format. ``context_type`` chooses nvdiffrast's
context for the UV-space rasterization where nvdiffrast is used (CUDA); elsewhere the PyTorch rasterizer bakes and
the value has no effect. ``exporter.mesh(geometry, material)`` returns the coloured ``Mesh`` itself.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Annotated, Any, Dict, List, Literal, Optional, Union

import torch

from framework import registry
from framework.config import Bounds, PositiveInt
from framework.errors import ConfigError
from framework.exporters import mesh_files
from framework.exporters.texture_bake import bake_texture
from framework.geometry.mesh import Mesh
from framework.module import BaseObject
from framework.renderers.raster_context import make_context
from framework.utils.export_output import ExportOutput

Format = Literal["obj-mtl", "obj", "ply", "glb"]


@registry.register("exporter", "mesh-exporter")
class MeshExporter(BaseObject):
    """The geometry's isosurface as OBJ (+MTL, texture), PLY or GLB, textured through xatlas UVs or vertex-coloured."""

    @dataclass
    class Config:
        fmt: Union[Format, List[Format]] = "obj-mtl"
        """File format(s): obj-mtl (textured OBJ), obj (vertex colours), ply, glb, or a list of them."""
        save_name: str = "model"
        """File name without extension."""
        save_normal: bool = False
        """Also write vertex normals."""
        save_uv: bool = True
        """Unwrap UVs with xatlas and write them (obj-mtl, obj, glb); a texture needs them."""
        save_texture: bool = True
        """Write colours: a baked texture (obj-mtl; glb with UVs) or vertex colours (obj, ply; glb without UVs)."""
        texture_size: Annotated[int, Bounds(ge=1, le=16384)] = 1024
        """Side of the square texture in texels."""
        texture_format: Literal["jpg", "png"] = "jpg"
        """Image format of the obj-mtl texture file."""
        xatlas_chart_options: Dict[str, Any] = field(default_factory=dict)
        """Attributes of xatlas.ChartOptions (e.g. max_iterations)."""
        xatlas_pack_options: Dict[str, Any] = field(default_factory=dict)
        """Attributes of xatlas.PackOptions; resolution defaults to texture_size and padding to 2 texels."""
        context_type: Literal["gl", "cuda"] = "gl"
        """nvdiffrast's context for baking on CUDA when nvdiffrast is installed; otherwise unused."""
        chunk_size: PositiveInt = 65536
        """Points per geometry/material evaluation."""

    cfg: Config

    def configure(self, **kwargs: Any) -> None:
        formats = self.formats
        key = self.prefix
        if self.cfg.save_texture and not self.cfg.save_uv and "obj-mtl" in formats:
            raise ConfigError(
                f"config error: {key}.save_uv: fmt obj-mtl writes colours as a texture, which needs UVs; set "
                f"{key}.save_uv=true, or {key}.save_texture=false, or {key}.fmt=obj for vertex colours"
            )
        if "obj-mtl" in formats and "obj" in formats:
            raise ConfigError(
                f"config error: {key}.fmt: obj-mtl and obj both write {self.cfg.save_name}.obj; choose one"
            )

    @property
    def formats(self) -> List[str]:
        fmt = self.cfg.fmt
        return [fmt] if isinstance(fmt, str) else list(dict.fromkeys(fmt))

    # ---------------------------------------------------------------------------------------------- the mesh
    @property
    def prefix(self) -> str:
        """The dotted config key of this exporter (``system.exporter``), for error messages."""
        return getattr(self, "_prefix", "") or "system.exporter"

    def _albedo_fn(self, geometry: Any, material: Any) -> Any:
        def albedo(points: torch.Tensor) -> Optional[torch.Tensor]:
            geo_out = geometry.export(points)
            out = material.export(points=points, **geo_out).get("albedo")
            return None if out is None else out[..., :3].float()

        return albedo

    @torch.no_grad()
    def mesh(self, geometry: Any, material: Any) -> Mesh:
        """The isosurface with what the formats need: UVs and the baked texture (``extras["texture"]``, an
        ``(S, S, 3)`` array), vertex colours."""
        cfg = self.cfg
        mesh = geometry.isosurface().detach()
        if mesh.n_faces == 0:
            raise ConfigError("export: the geometry's surface has no faces; nothing to export")
        albedo = self._albedo_fn(geometry, material)
        wants_uv = cfg.save_uv and any(f in ("obj-mtl", "obj", "glb") for f in self.formats)
        wants_texture = cfg.save_texture and cfg.save_uv and any(f in ("obj-mtl", "glb") for f in self.formats)
        wants_colours = cfg.save_texture and (
            any(f in ("obj", "ply") for f in self.formats) or ("glb" in self.formats and not cfg.save_uv)
        )
        probe = albedo(mesh.v_pos[:1]) if cfg.save_texture else None
        if cfg.save_texture and probe is None:
            print(f"warning: {self.prefix}.save_texture: the material ({type(material).__name__}) exports no "
                  "albedo; writing the mesh without colours", file=sys.stderr)
            wants_texture = wants_colours = False
        if wants_uv:
            pack = {"resolution": cfg.texture_size, "padding": 2, **cfg.xatlas_pack_options}
            mesh.unwrap_uv(cfg.xatlas_chart_options, pack, key=self.prefix)
        if wants_texture:
            ctx = make_context("auto", cfg.context_type, mesh.v_pos.device, key=self.prefix)
            padding = float(max(pack.get("padding", 2), 1))
            texture, _ = bake_texture(mesh, albedo, cfg.texture_size, ctx, padding, cfg.chunk_size)
            mesh.add_extra("texture", texture)
        if wants_colours:
            parts = [albedo(mesh.v_pos[i : i + cfg.chunk_size]) for i in range(0, mesh.n_vertices, cfg.chunk_size)]
            mesh.set_vertex_color(torch.cat(parts).clamp(0.0, 1.0))
        return mesh

    def __call__(self, geometry: Any, material: Any) -> List[ExportOutput]:
        cfg = self.cfg
        mesh = self.mesh(geometry, material)
        v_pos = mesh.v_pos.float().cpu().numpy()
        faces = mesh.t_pos_idx.cpu().numpy()
        v_nrm = mesh.v_nrm.float().cpu().numpy() if cfg.save_normal else None
        v_tex = mesh.v_tex.float().cpu().numpy() if mesh.has_uv else None
        t_tex = mesh.t_tex_idx.cpu().numpy() if mesh.has_uv else None
        v_rgb = mesh.v_rgb.float().cpu().numpy() if mesh.v_rgb is not None else None
        texture = mesh.extras.get("texture")
        name = cfg.save_name
        files: List[ExportOutput] = []
        for fmt in self.formats:
            if fmt == "obj-mtl":
                texture_name = f"texture_kd.{cfg.texture_format}" if texture is not None else None
                text = mesh_files.obj_text(v_pos, faces, v_nrm, v_tex, t_tex, None, mtllib=f"{name}.mtl")
                files.append(ExportOutput(f"{name}.obj", text.encode("utf-8")))
                files.append(ExportOutput(f"{name}.mtl", mesh_files.mtl_text(texture_name).encode("utf-8")))
                if texture is not None:
                    files.append(ExportOutput(texture_name, mesh_files.image_bytes(texture, cfg.texture_format)))
            elif fmt == "obj":
                text = mesh_files.obj_text(v_pos, faces, v_nrm, v_tex, t_tex, v_rgb)
                files.append(ExportOutput(f"{name}.obj", text.encode("utf-8")))
            elif fmt == "ply":
                files.append(ExportOutput(f"{name}.ply", mesh_files.ply_bytes(v_pos, faces, v_nrm, v_rgb)))
            else:
                data = mesh_files.glb_bytes(v_pos, faces, v_nrm, v_tex, t_tex, v_rgb, texture)
                files.append(ExportOutput(f"{name}.glb", data))
        return files
