"""The two rasterization back ends behind one interface (nvdiffrast's four operations, threestudio's context).

``make_context(backend, context_type, device)`` returns one of:

* ``NVDiffrastContext``: nvdiffrast (``RasterizeGLContext`` for ``context_type: gl``, ``RasterizeCudaContext`` for
  ``cuda``), on CUDA devices where ``nvdiffrast.torch`` imports;
* ``TorchRasterContext``: ``framework.renderers.rasterize_torch`` and ``antialias_torch``, on any device (CPU tensors
  and CUDA tensors alike).

``backend: auto`` takes nvdiffrast when the device is CUDA and it imports (and its context can be created), the
PyTorch back end otherwise. Both give ``rast (B, H, W, 4) = (u, v, z/w, triangle_id + 1)`` with gradients through
``u, v``, so the renderer does not know which it has; ``lab/raster_checks.py`` compares them.

Interface::

    ctx.vertex_transform(verts (V, 3), mvp (B, 4, 4)) -> clip (B, V, 4)
    ctx.rasterize(clip, tri (F, 3), (H, W)) -> rast (B, H, W, 4)
    ctx.interpolate(attr (V, C) or (B, V, C), rast, tri) -> (B, H, W, C)
    ctx.antialias(color (B, H, W, C), rast, clip, tri) -> (B, H, W, C)   # antialias all channels of a render at once
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from framework.errors import ConfigError
from framework.renderers import antialias_torch, rasterize_torch

Resolution = Union[int, Tuple[int, int]]


class RasterContext:
    """Common part of both back ends: the model-view-projection transform."""

    name = "base"

    def vertex_transform(self, verts: Tensor, mvp: Tensor) -> Tensor:
        """Clip-space positions ``(B, V, 4)`` of world ``verts (V, 3)`` under ``mvp (B, 4, 4)``."""
        homogeneous = torch.cat([verts, torch.ones_like(verts[:, :1])], dim=-1)
        return torch.matmul(homogeneous, mvp.to(verts).transpose(1, 2))

    def rasterize(self, pos: Tensor, tri: Tensor, resolution: Resolution) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def interpolate(self, attr: Tensor, rast: Tensor, tri: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def antialias(self, color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError


class TorchRasterContext(RasterContext):
    """The PyTorch back end (any device, float32 or float64)."""

    name = "torch"

    def __init__(self, max_candidates: int = rasterize_torch.MAX_CANDIDATES):
        self.max_candidates = max_candidates

    def rasterize(self, pos: Tensor, tri: Tensor, resolution: Resolution) -> Tensor:
        return rasterize_torch.rasterize(pos, tri, resolution, self.max_candidates)

    def interpolate(self, attr: Tensor, rast: Tensor, tri: Tensor) -> Tensor:
        return rasterize_torch.interpolate(attr, rast, tri)

    def antialias(self, color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor) -> Tensor:
        return antialias_torch.antialias(color, rast, pos, tri)


class NVDiffrastContext(RasterContext):
    """nvdiffrast on a CUDA device; inputs are made float32, int32 and contiguous as it requires."""

    name = "nvdiffrast"

    def __init__(self, context_type: str, device: torch.device):
        import nvdiffrast.torch as dr

        self.dr = dr
        self.context_type = context_type
        if context_type == "gl":
            self.ctx = dr.RasterizeGLContext(device=device)
        else:
            self.ctx = dr.RasterizeCudaContext(device=device)

    def rasterize(self, pos: Tensor, tri: Tensor, resolution: Resolution) -> Tensor:
        size = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        rast, _ = self.dr.rasterize(self.ctx, pos.float().contiguous(), tri.int().contiguous(), size, grad_db=True)
        return rast

    def interpolate(self, attr: Tensor, rast: Tensor, tri: Tensor) -> Tensor:
        if attr.dim() == 2:
            attr = attr[None]
        out, _ = self.dr.interpolate(attr.float().contiguous(), rast, tri.int().contiguous())
        return out

    def antialias(self, color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor) -> Tensor:
        return self.dr.antialias(color.float().contiguous(), rast, pos.float().contiguous(), tri.int().contiguous())


def nvdiffrast_importable() -> bool:
    """Whether ``nvdiffrast.torch`` imports (it is built from source, with CUDA; not on PyPI)."""
    try:
        import nvdiffrast.torch  # noqa: F401
    except Exception:
        return False
    return True


_WARNED: Dict[str, bool] = {}


def make_context(
    backend: str, context_type: str, device: torch.device, key: str = "system.renderer", **torch_kwargs: Any
) -> RasterContext:
    """The back end for ``device`` (see the module docstring); ``key`` prefixes config errors.

    ``backend: nvdiffrast`` on a machine without it is a config error; ``auto`` falls back to the PyTorch back end,
    saying so once on stderr when nvdiffrast imports but its context cannot be created (e.g. no OpenGL/EGL for ``gl``).
    """
    device = torch.device(device)
    if backend == "torch":
        return TorchRasterContext(**torch_kwargs)
    wants_nv = backend == "nvdiffrast"
    if device.type != "cuda" or not nvdiffrast_importable():
        if wants_nv:
            why = "the device is not CUDA" if device.type != "cuda" else "nvdiffrast is not installed"
            raise ConfigError(
                f"config error: {key}.backend: nvdiffrast is not usable here ({why}); use auto or torch "
                "(the PyTorch rasterizer, any device)"
            )
        return TorchRasterContext(**torch_kwargs)
    try:
        return NVDiffrastContext(context_type, device)
    except Exception as e:  # context creation: missing EGL/OpenGL for gl, driver problems
        if wants_nv:
            raise ConfigError(
                f"config error: {key}.context_type: nvdiffrast could not create a '{context_type}' context "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); try context_type: cuda"
            ) from None
        if not _WARNED.get(context_type):
            _WARNED[context_type] = True
            print(
                f"warning: {key}: nvdiffrast could not create a '{context_type}' context ({type(e).__name__}); "
                "rendering with the PyTorch rasterizer",
                file=sys.stderr,
            )
        return TorchRasterContext(**torch_kwargs)


def resolve_backend(backend: str, device: Optional[torch.device]) -> str:
    """The back end ``backend`` resolves to on ``device`` without creating a context (``nvdiffrast`` or ``torch``)."""
    if backend != "auto":
        return backend
    if device is not None and torch.device(device).type == "cuda" and nvdiffrast_importable():
        return "nvdiffrast"
    return "torch"
