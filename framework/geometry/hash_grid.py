"""Multiresolution hash encoding (Instant-NGP, Müller et al. 2022) in PyTorch, laid out as tiny-cuda-nn lays it out.

Level ``l`` of ``L`` has ``scale_l = base_resolution * per_level_scale ** l - 1`` and ``resolution_l = ceil(scale_l) + 1``
vertices per axis. A point ``x`` in ``[0, 1]^D`` is placed at ``x * scale_l + 0.5`` (the half-cell offset staggers the
levels); the features of the ``2^D`` surrounding vertices are blended with multilinear weights. A level whose
``resolution_l^D`` vertices fit in its table is indexed densely (``x + y * res + z * res^2``); a finer one uses the
coherent prime hash ``x * 1 xor y * 2654435761 xor z * 805459861`` (32-bit). Table ``l`` holds
``min(2^log2_hashmap_size, next_multiple(resolution_l^D, 8))`` entries of ``n_features_per_level`` values, initialised
uniformly in ``[-1e-4, 1e-4]``; the output concatenates the levels, coarsest first.

The parameters form one flat vector in tiny-cuda-nn's order (level, entry, feature), so a state dict moves between the
PyTorch and the tiny-cuda-nn backend unchanged. ``backend: auto`` uses tiny-cuda-nn when it is importable and CUDA is
available when the module is built; the PyTorch path runs anywhere and is what the tests check against a direct
per-point evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Literal, NamedTuple

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from framework.errors import ConfigError

PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)
"""tiny-cuda-nn's coherent prime hash factors, one per input dimension."""


@dataclass
class HashGridConfig:
    """threestudio's ``pos_encoding_config`` for a hash grid (tiny-cuda-nn's field names)."""

    otype: Literal["HashGrid"] = "HashGrid"
    """Encoding type; the multiresolution hash grid is the one implemented."""
    n_levels: int = 16
    """Number of resolution levels."""
    n_features_per_level: int = 2
    """Features stored per table entry (1, 2, 4 or 8)."""
    log2_hashmap_size: int = 19
    """log2 of the maximum number of table entries per level."""
    base_resolution: int = 16
    """Vertices per axis of the coarsest level."""
    per_level_scale: float = 1.447269237440378
    """Resolution growth factor between levels (1.4473 with 16 levels from 16 gives a finest level of 4096)."""
    backend: Literal["auto", "torch", "tcnn"] = "auto"
    """auto: tiny-cuda-nn when importable and CUDA is available at build time, else PyTorch; or force one."""


class LevelInfo(NamedTuple):
    """Geometry of one level: scale, vertices per axis, table entries, offset in the flat table, dense or hashed."""

    scale: float
    resolution: int
    size: int
    offset: int
    dense: bool


def level_layout(n_input_dims: int, cfg: HashGridConfig) -> List[LevelInfo]:
    """Per-level scales and table sizes, computed in float32 exactly as tiny-cuda-nn computes them."""
    log2_scale = np.log2(np.float32(cfg.per_level_scale), dtype=np.float32)
    max_size = 1 << cfg.log2_hashmap_size
    levels = []
    offset = 0
    for level in range(cfg.n_levels):
        scale = np.float32(np.exp2(np.float32(level) * log2_scale, dtype=np.float32)) * np.float32(
            cfg.base_resolution
        ) - np.float32(1.0)
        resolution = int(math.ceil(float(scale))) + 1
        dense_size = resolution**n_input_dims
        dense_size = (dense_size + 7) // 8 * 8
        size = min(dense_size, max_size)
        levels.append(LevelInfo(float(scale), resolution, size, offset, resolution**n_input_dims <= size))
        offset += size
    return levels


def tcnn_available() -> bool:
    """Whether tiny-cuda-nn can be used: its Python module imports and CUDA is available."""
    if not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401
    except Exception:
        return False
    return True


class HashGridEncoding(nn.Module):
    """``(N, D)`` points in ``[0, 1]^D`` to ``(N, n_levels * n_features_per_level)`` features.

    Points outside the unit cube are clamped to it.

    >>> enc = HashGridEncoding(3, HashGridConfig(n_levels=4, log2_hashmap_size=12, backend="torch"))
    >>> enc(torch.rand(5, 3)).shape
    torch.Size([5, 8])
    """

    def __init__(self, n_input_dims: int, cfg: HashGridConfig):
        super().__init__()
        if cfg.n_features_per_level not in (1, 2, 4, 8):
            raise ConfigError(
                f"config error: n_features_per_level: must be 1, 2, 4 or 8 (as in tiny-cuda-nn), got {cfg.n_features_per_level}"
            )
        if not 1 <= n_input_dims <= len(PRIMES):
            raise ConfigError(f"config error: hash grid input dimension must be 1 to {len(PRIMES)}, got {n_input_dims}")
        self.cfg = cfg
        self.n_input_dims = n_input_dims
        self.n_levels = cfg.n_levels
        self.n_features_per_level = cfg.n_features_per_level
        self.n_output_dims = cfg.n_levels * cfg.n_features_per_level
        self.levels = level_layout(n_input_dims, cfg)
        self.n_entries = sum(level.size for level in self.levels)

        if cfg.backend == "tcnn" and not tcnn_available():
            raise ConfigError(
                "config error: pos_encoding_config.backend: 'tcnn' needs tinycudann and CUDA; use 'auto' or 'torch'"
            )
        self.backend = "tcnn" if cfg.backend == "tcnn" or (cfg.backend == "auto" and tcnn_available()) else "torch"

        if self.backend == "tcnn":
            import tinycudann as tcnn

            self.tcnn = tcnn.Encoding(
                n_input_dims,
                {
                    "otype": "HashGrid",
                    "n_levels": cfg.n_levels,
                    "n_features_per_level": cfg.n_features_per_level,
                    "log2_hashmap_size": cfg.log2_hashmap_size,
                    "base_resolution": cfg.base_resolution,
                    "per_level_scale": cfg.per_level_scale,
                },
                dtype=torch.float32,
            )
            if self.tcnn.params.numel() != self.n_entries * self.n_features_per_level:
                raise RuntimeError(
                    f"tiny-cuda-nn hash grid has {self.tcnn.params.numel()} parameters, the PyTorch layout "
                    f"{self.n_entries * self.n_features_per_level}; the layouts disagree"
                )
        else:
            self.params = nn.Parameter(torch.empty(self.n_entries * self.n_features_per_level).uniform_(-1e-4, 1e-4))

        d = n_input_dims
        corners = torch.tensor([[(c >> k) & 1 for k in range(d)] for c in range(1 << d)], dtype=torch.long)
        self.register_buffer("corners", corners, persistent=False)  # (2^D, D)
        self.register_buffer("primes", torch.tensor(PRIMES[:d], dtype=torch.long), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.backend == "tcnn":
            return self.tcnn(x.clamp(0.0, 1.0)).float()
        return self._forward_torch(x)

    def _level_indices(self, x: Tensor, level: LevelInfo) -> tuple:
        """Table rows ``(N, 2^D)`` of the vertices around each point at ``level``, and their multilinear weights."""
        d = x.shape[1]
        pos = x * level.scale + 0.5
        floor = torch.floor(pos)
        frac = (pos - floor)[:, None, :]
        vertex = floor.long()[:, None, :] + self.corners[None]  # (N, 2^D, D)
        if level.dense:
            index = vertex[..., 0].clone()
            stride = level.resolution
            for k in range(1, d):
                index += vertex[..., k] * stride
                stride *= level.resolution
        else:
            h = vertex * self.primes
            index = h[..., 0]
            for k in range(1, d):
                index = index ^ h[..., k]
            index = index & 0xFFFFFFFF
        weight = torch.where(self.corners.bool()[None], frac, 1.0 - frac).prod(dim=-1)
        return index % level.size + level.offset, weight

    def _forward_torch(self, x: Tensor) -> Tensor:
        n, d = x.shape
        x = x.clamp(0.0, 1.0).float()
        table = self.params.view(self.n_entries, self.n_features_per_level)
        n_corners = 1 << d
        if not torch.is_grad_enabled() or not (x.requires_grad or self.params.requires_grad):
            # inference: one gather per level, nothing kept alive across levels
            out = []
            for level in self.levels:
                index, weight = self._level_indices(x, level)
                values = table.index_select(0, index.reshape(-1)).view(n, n_corners, -1)
                out.append((weight[..., None] * values).sum(dim=1))
            return torch.cat(out, dim=-1)
        # training: one gather for all levels, so that the backward pass scatters into the table once
        pairs = [self._level_indices(x, level) for level in self.levels]
        index = torch.stack([p[0] for p in pairs], dim=1)  # (N, L, 2^D)
        weight = torch.stack([p[1] for p in pairs], dim=1)  # (N, L, 2^D)
        values = table.index_select(0, index.reshape(-1)).view(n, self.n_levels, n_corners, -1)
        return (weight[..., None] * values).sum(dim=2).reshape(n, self.n_output_dims)

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # the flat parameter vector is the same in both backends; only its key differs
        own, other = (prefix + "tcnn.params", prefix + "params")
        if self.backend == "torch":
            own, other = other, own
        if other in state_dict and own not in state_dict:
            state_dict[own] = state_dict.pop(other)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
