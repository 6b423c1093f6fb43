"""``mesh-exporter``: the geometry's isosurface as OBJ and/or PLY with vertex colours.

Interface of every exporter::

    exporter = registry.find("exporter", name)(cfg)
    outputs = exporter(geometry, material)        # -> List[ExportOutput] (framework.utils.export_output)
    for out in outputs: out.write(folder / out.filename)   # out.data: the file's bytes here

The mesh comes from ``geometry.isosurface()`` (marching cubes on the density field, see
``framework.geometry.base``); each vertex is coloured with ``material.export(**geometry.export(vertex))["albedo"]``
(the unlit base colour), stored as 8-bit RGB. ``exporter.mesh(geometry, material)`` returns the ``trimesh.Trimesh``
itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Literal, Union

import numpy as np
import torch

from framework import registry
from framework.config import PositiveInt
from framework.module import BaseObject
from framework.utils.export_output import ExportOutput

Format = Literal["obj", "ply"]


@registry.register("exporter", "mesh-exporter")
class MeshExporter(BaseObject):
    """Marching-cubes mesh of the density field with vertex colours."""

    @dataclass
    class Config:
        fmt: Union[Format, List[Format]] = "obj"
        """File format(s): obj, ply, or a list of both."""
        save_name: str = "model"
        """File name without extension."""
        save_texture: bool = True
        """Colour the vertices with the material's albedo."""
        save_normal: bool = False
        """Also write vertex normals (OBJ and PLY)."""
        chunk_size: PositiveInt = 65536
        """Vertices per geometry/material evaluation when colouring."""

    cfg: Config

    @torch.no_grad()
    def mesh(self, geometry: Any, material: Any) -> "trimesh.Trimesh":  # noqa: F821
        """The coloured ``trimesh.Trimesh`` of ``geometry.isosurface()``."""
        import trimesh

        iso = geometry.isosurface()
        vertices = iso.v_pos.float()
        kwargs = {}
        if self.cfg.save_texture:
            device = next((t.device for t in geometry.buffers()), torch.device("cpu"))
            colours = []
            for i in range(0, vertices.shape[0], self.cfg.chunk_size):
                points = vertices[i : i + self.cfg.chunk_size].to(device)
                albedo = material.export(**geometry.export(points)).get("albedo")
                if albedo is None:
                    colours = []
                    break
                colours.append(albedo[..., :3].clamp(0.0, 1.0).cpu())
            if colours:
                rgb = (torch.cat(colours).numpy() * 255.0).round().astype(np.uint8)
                kwargs["vertex_colors"] = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)
        return trimesh.Trimesh(
            vertices=vertices.cpu().numpy(), faces=iso.t_pos_idx.cpu().numpy(), process=False, **kwargs
        )

    def __call__(self, geometry: Any, material: Any) -> List[ExportOutput]:
        from trimesh.exchange.obj import export_obj
        from trimesh.exchange.ply import export_ply

        mesh = self.mesh(geometry, material)
        formats = [self.cfg.fmt] if isinstance(self.cfg.fmt, str) else list(dict.fromkeys(self.cfg.fmt))
        files = []
        for fmt in formats:
            if fmt == "obj":
                text = export_obj(
                    mesh,
                    include_normals=self.cfg.save_normal,
                    include_color=self.cfg.save_texture,
                    include_texture=False,
                )
                files.append(ExportOutput(f"{self.cfg.save_name}.obj", text.encode("utf-8")))
            else:
                data = export_ply(mesh, encoding="binary", vertex_normal=self.cfg.save_normal)
                files.append(ExportOutput(f"{self.cfg.save_name}.ply", data))
        return files
