"""Mesh file writers: OBJ (+ MTL and texture), PLY and binary glTF (GLB), as bytes.

Arrays are numpy: positions ``v_pos (V, 3)``, faces ``t_pos_idx (F, 3)``, optional unit normals ``v_nrm (V, 3)``,
vertex colours ``v_rgb (V, 3)`` in [0, 1], UVs ``v_tex (T, 2)`` with faces ``t_tex_idx (F, 3)`` (v = 0 at the top row of
the texture, see ``texture_bake``), and the texture image ``(S, S, 3)`` in [0, 1].

* OBJ keeps positions unsplit (``f v/vt/vn``) as threestudio writes it: ``v x y z [r g b]``, ``vt u 1-v``,
  ``vn x y z``; with a material, ``mtllib``/``usemtl`` and an MTL whose ``map_Kd`` names ``texture_kd.<ext>``.
* PLY (trimesh's binary writer) holds positions, faces, 8-bit vertex colours and normals; it has no UVs.
* GLB (trimesh's writer) needs one UV per vertex, so positions are split along the UV seams; the texture is the
  material's ``baseColorTexture`` (metallic 0, roughness 1: a diffuse surface), or vertex colours without UVs.
"""

from __future__ import annotations

import io
from typing import Optional

import numpy as np

MATERIAL_NAME = "default"
"""The material name in OBJ/MTL (threestudio's)."""


def _rows(prefix: str, values: np.ndarray) -> str:
    if len(values) == 0:
        return ""
    fmt = " ".join(["%.6g"] * values.shape[1])
    return "\n".join(prefix + " " + (fmt % tuple(row)) for row in values.tolist()) + "\n"


def obj_text(
    v_pos: np.ndarray,
    t_pos_idx: np.ndarray,
    v_nrm: Optional[np.ndarray] = None,
    v_tex: Optional[np.ndarray] = None,
    t_tex_idx: Optional[np.ndarray] = None,
    v_rgb: Optional[np.ndarray] = None,
    mtllib: Optional[str] = None,
) -> str:
    """The OBJ file; ``mtllib`` (an MTL file name) adds the material ``default``."""
    parts = []
    if mtllib is not None:
        parts.append(f"mtllib {mtllib}\ng object\nusemtl {MATERIAL_NAME}\n")
    vertices = v_pos if v_rgb is None else np.concatenate([v_pos, v_rgb], axis=1)
    parts.append(_rows("v", vertices))
    if v_tex is not None:
        parts.append(_rows("vt", np.stack([v_tex[:, 0], 1.0 - v_tex[:, 1]], axis=1)))
    if v_nrm is not None:
        parts.append(_rows("vn", v_nrm))
    p = t_pos_idx + 1
    t = t_tex_idx + 1 if v_tex is not None else None
    lines = []
    for f in range(len(t_pos_idx)):
        corners = []
        for k in range(3):
            if t is not None and v_nrm is not None:
                corners.append(f"{p[f, k]}/{t[f, k]}/{p[f, k]}")
            elif t is not None:
                corners.append(f"{p[f, k]}/{t[f, k]}")
            elif v_nrm is not None:
                corners.append(f"{p[f, k]}//{p[f, k]}")
            else:
                corners.append(f"{p[f, k]}")
        lines.append("f " + " ".join(corners))
    parts.append("\n".join(lines) + ("\n" if lines else ""))
    return "".join(parts)


def mtl_text(texture_name: Optional[str]) -> str:
    """The MTL file of material ``default``: a white diffuse colour, with ``map_Kd`` when there is a texture."""
    lines = [f"newmtl {MATERIAL_NAME}", "Ka 0 0 0", "Kd 1 1 1", "Ks 0 0 0", "illum 1"]
    if texture_name is not None:
        lines.append(f"map_Kd {texture_name}")
    return "\n".join(lines) + "\n"


def image_bytes(image: np.ndarray, fmt: str) -> bytes:
    """An ``(H, W, 3)`` image in [0, 1] encoded as ``png`` or ``jpg`` (quality 95)."""
    from PIL import Image

    pixels = (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    buffer = io.BytesIO()
    if fmt == "png":
        Image.fromarray(pixels).save(buffer, format="PNG")
    else:
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def ply_bytes(v_pos: np.ndarray, t_pos_idx: np.ndarray, v_nrm: Optional[np.ndarray] = None,
              v_rgb: Optional[np.ndarray] = None) -> bytes:
    """Binary PLY with optional vertex normals and 8-bit vertex colours."""
    import trimesh
    from trimesh.exchange.ply import export_ply

    kwargs = {}
    if v_rgb is not None:
        kwargs["vertex_colors"] = _rgba8(v_rgb)
    if v_nrm is not None:
        kwargs["vertex_normals"] = v_nrm
    mesh = trimesh.Trimesh(vertices=v_pos, faces=t_pos_idx, process=False, **kwargs)
    return export_ply(mesh, encoding="binary", vertex_normal=v_nrm is not None)


def glb_bytes(
    v_pos: np.ndarray,
    t_pos_idx: np.ndarray,
    v_nrm: Optional[np.ndarray] = None,
    v_tex: Optional[np.ndarray] = None,
    t_tex_idx: Optional[np.ndarray] = None,
    v_rgb: Optional[np.ndarray] = None,
    texture: Optional[np.ndarray] = None,
) -> bytes:
    """Binary glTF of one mesh: textured (``v_tex`` and ``texture``), UV-mapped, or vertex-coloured."""
    import trimesh
    from PIL import Image
    from trimesh.exchange.gltf import export_glb
    from trimesh.visual import ColorVisuals, TextureVisuals
    from trimesh.visual.material import PBRMaterial

    normals = v_nrm
    if v_tex is not None:
        # one vertex per UV: the position (and normal) of the corner that uses it
        split_pos = np.zeros((len(v_tex), 3), dtype=v_pos.dtype)
        split_pos[t_tex_idx.reshape(-1)] = v_pos[t_pos_idx.reshape(-1)]
        if v_nrm is not None:
            normals = np.zeros((len(v_tex), 3), dtype=v_nrm.dtype)
            normals[t_tex_idx.reshape(-1)] = v_nrm[t_pos_idx.reshape(-1)]
        material = PBRMaterial(
            name=MATERIAL_NAME, metallicFactor=0.0, roughnessFactor=1.0,
            baseColorTexture=None if texture is None else Image.fromarray(
                (np.clip(texture, 0.0, 1.0) * 255.0).round().astype(np.uint8)),
        )
        # trimesh's UVs have v upwards and its glTF writer flips them back: give it 1 - v
        uv = np.stack([v_tex[:, 0], 1.0 - v_tex[:, 1]], axis=1)
        visual = TextureVisuals(uv=uv, material=material)
        mesh = trimesh.Trimesh(vertices=split_pos, faces=t_tex_idx, visual=visual, process=False)
    else:
        visual = ColorVisuals(vertex_colors=_rgba8(v_rgb)) if v_rgb is not None else None
        mesh = trimesh.Trimesh(vertices=v_pos, faces=t_pos_idx, visual=visual, process=False)
    if normals is not None:
        mesh.vertex_normals = normals
    return export_glb(trimesh.Scene(mesh), include_normals=normals is not None)


def _rgba8(rgb: np.ndarray) -> np.ndarray:
    rgb8 = (np.clip(rgb, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return np.concatenate([rgb8, np.full((len(rgb8), 1), 255, np.uint8)], axis=1)
