"""Multiresolution hash encoding (Instant-NGP, Müller et al. 2022) in PyTorch, laid out as tiny-cuda-nn lays it out.

Level ``l`` of ``L`` has ``scale_l = base_resolution * per_level_scale ** l - 1`` and
``resolution_l = ceil(scale_l) + 1`` vertices per axis. A point ``x`` in ``[0, 1]^D`` is placed at
``x * scale_l + 0.5`` (the half-cell offset staggers the levels); the features of the ``2^D`` surrounding vertices
are blended with multilinear weights. A level whose
``resolution_l^D`` vertices fit in its table is indexed densely (``x + y * res + z * res^2``); a finer one uses the
coherent prime hash ``x * 1 xor y * 2654435761 xor z * 805459861`` (32-bit). Table ``l`` holds
``min(2^log2_hashmap_size, next_multiple(resolution_l^D, 8))`` entries of ``n_features_per_level`` values, initialised
uniformly in ``[-1e-4, 1e-4]``; the output concatenates the levels, coarsest first.

The parameters form one flat vector in tiny-cuda-nn's order (level, entry, feature), so a state dict moves between the
PyTorch and the tiny-cuda-nn backend unchanged. ``backend: auto`` uses tiny-cuda-nn when it is importable and CUDA is
available when the module is built; the PyTorch path runs anywhere and is what the tests check against a direct
per-point evaluation.

The PyTorch path computes each level's 2^D table rows and weights with whole-tensor operations and reads the table
one level at a time (one weighted gather per level, so that a level's rows stay in cache, as tiny-cuda-nn's kernels
do). It picks the cheapest form autograd allows: without gradients, plain per-level gathers; with gradients for the
table only (the usual training step), a custom function whose backward scatters into the table's gradient once; with
gradients for the points too (analytic normals, which an orientation loss differentiates again), one gather that
autograd differentiates twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Dict, List, Literal, NamedTuple, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from framework.config import Bounds, NonNegativeInt, PositiveInt, Step, Steps, config_error

MAX_LOG2_HASHMAP_SIZE = 24
"""Largest table of a level, 2^24 entries (Instant-NGP's largest; 16 levels of it are 2 GB of float32 features)."""

MAX_LEVEL_RESOLUTION = 1 << 24
"""Vertices per axis of the finest level beyond which positions lose all precision in float32."""

PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)
"""tiny-cuda-nn's coherent prime hash factors, one per input dimension."""


@dataclass
class HashGridConfig:
    """threestudio's ``pos_encoding_config`` for a hash grid (tiny-cuda-nn's field names)."""

    otype: Literal["HashGrid", "ProgressiveBandHashGrid"] = "HashGrid"
    """HashGrid, or ProgressiveBandHashGrid: the same grid with its finer levels switched on over training."""
    n_levels: Annotated[int, Bounds(ge=1, le=32)] = 16
    """Number of resolution levels."""
    n_features_per_level: Literal[1, 2, 4, 8] = 2
    """Features stored per table entry (1, 2, 4 or 8, as in tiny-cuda-nn)."""
    log2_hashmap_size: Annotated[int, Bounds(ge=1, le=MAX_LOG2_HASHMAP_SIZE)] = 19
    """log2 of the maximum number of table entries per level."""
    base_resolution: PositiveInt = 16
    """Vertices per axis of the coarsest level."""
    per_level_scale: Annotated[float, Bounds(ge=1)] = 1.447269237440378
    """Resolution growth factor between levels (1.4473 with 16 levels from 16 gives a finest level of 4096)."""
    backend: Literal["auto", "torch", "tcnn"] = "auto"
    """auto: tiny-cuda-nn when importable and CUDA is available at build time, else PyTorch; or force one."""
    start_level: NonNegativeInt = 8
    """ProgressiveBandHashGrid: levels active at the start (the rest output zeros)."""
    start_step: Step = 2000
    """ProgressiveBandHashGrid: the step from which one more level is switched on every update_steps."""
    update_steps: Steps = 500
    """ProgressiveBandHashGrid: steps between two levels being switched on."""


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


class _WeightedRows(torch.autograd.Function):
    """Per level ``l``: ``out[n, l] = sum_c weights[l][n, c] * table_l[rows[l][n, c]]`` with ``table_l`` the level's
    slice of the table; ``(N, L, F)``, with a gradient for the table only.

    Levels are processed one after the other, forward (``embedding_bag``) and backward (one scatter into the level's
    slice of the table's gradient): each level's rows stay in cache, as in tiny-cuda-nn's kernels, and the gradient
    is allocated once. On the CPU this is several times faster than autograd through one gather of all levels.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, table: Tensor, bounds: List[Tuple[int, int]], rows: List[Tensor], weights: List[Tensor]
    ) -> Tensor:
        ctx.bounds, ctx.rows, ctx.weights = bounds, rows, weights
        ctx.table_shape = table.shape
        out = [
            F.embedding_bag(r, table[start:stop], per_sample_weights=w, mode="sum")
            for (start, stop), r, w in zip(bounds, rows, weights)
        ]
        return torch.stack(out, dim=1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tuple[Optional[Tensor], None, None, None]:  # type: ignore[override]
        n_rows, f = ctx.table_shape
        features = torch.arange(f, device=grad.device)
        table_grad = torch.zeros(n_rows * f, dtype=grad.dtype, device=grad.device)
        for level, ((start, stop), r, w) in enumerate(zip(ctx.bounds, ctx.rows, ctx.weights)):
            src = w[..., None] * grad[:, level, None, :]  # (N, 2^D, F)
            flat = r[..., None] * f + features
            table_grad[start * f : stop * f].scatter_add_(0, flat.reshape(-1), src.reshape(-1))
        return table_grad.view(n_rows, f), None, None, None


class HashGridEncoding(nn.Module):
    """``(N, D)`` points in ``[0, 1]^D`` to ``(N, n_levels * n_features_per_level)`` features.

    Points outside the unit cube are clamped to it.

    >>> enc = HashGridEncoding(3, HashGridConfig(n_levels=4, log2_hashmap_size=12, backend="torch"))
    >>> enc(torch.rand(5, 3)).shape
    torch.Size([5, 8])
    """

    def __init__(self, n_input_dims: int, cfg: HashGridConfig, key: str = "pos_encoding_config"):
        super().__init__()
        if not 1 <= n_input_dims <= len(PRIMES):
            raise ValueError(f"hash grid input dimension must be 1 to {len(PRIMES)}, got {n_input_dims}")
        finest = float(cfg.base_resolution) * float(cfg.per_level_scale) ** (cfg.n_levels - 1)
        if not finest <= MAX_LEVEL_RESOLUTION:
            raise config_error(
                f"{key}.per_level_scale",
                f"the finest level would have {finest:.3g} vertices per axis (base_resolution * per_level_scale ^ "
                f"(n_levels - 1)), more than {MAX_LEVEL_RESOLUTION}; lower per_level_scale, n_levels or base_resolution",
            )
        self.cfg = cfg
        self.n_input_dims = n_input_dims
        self.n_levels = cfg.n_levels
        self.n_features_per_level = cfg.n_features_per_level
        self.n_output_dims = cfg.n_levels * cfg.n_features_per_level
        self.levels = level_layout(n_input_dims, cfg)
        self.n_entries = sum(level.size for level in self.levels)

        if cfg.backend == "tcnn" and not tcnn_available():
            raise config_error(f"{key}.backend", "'tcnn' needs tinycudann and CUDA; use 'auto' or 'torch'")
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

    def active_levels(self, global_step: int) -> int:
        """Levels whose features are used at ``global_step`` (all of them for a plain HashGrid)."""
        cfg = self.cfg
        if cfg.otype != "ProgressiveBandHashGrid":
            return self.n_levels
        grown = max(global_step - cfg.start_step, 0) // max(cfg.update_steps, 1)
        return min(cfg.start_level + grown, self.n_levels)

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        """Switch on the levels of a ProgressiveBandHashGrid for ``global_step``."""
        self.current_level = self.active_levels(global_step)

    def forward(self, x: Tensor) -> Tensor:
        if self.backend == "tcnn":
            enc = self.tcnn(x.clamp(0.0, 1.0)).float()
        else:
            enc = self._forward_torch(x)
        level = getattr(self, "current_level", self.active_levels(0))
        if level < self.n_levels:  # coarse to fine: the inactive levels' features are zero
            mask = torch.zeros(self.n_output_dims, dtype=enc.dtype, device=enc.device)
            mask[: level * self.n_features_per_level] = 1.0
            enc = enc * mask
        return enc

    def _level_indices(self, x: Tensor, level: LevelInfo) -> Tuple[Tensor, Tensor]:
        """Rows ``(N, 2^D)`` of the level's table for the vertices around each point, and their multilinear weights.

        Built per axis and combined by broadcasting: the 2^D corners are (floor or floor + 1) on every axis.
        """
        n, d = x.shape
        pos = x * level.scale + 0.5
        floor = torch.floor(pos)
        frac = pos - floor
        base = floor.long()
        index: Optional[Tensor] = None
        weight: Optional[Tensor] = None
        for k in range(d):
            shape = [n] + [1] * d
            shape[k + 1] = 2
            coord = torch.stack([base[:, k], base[:, k] + 1], dim=-1)
            term = coord * (level.resolution**k if level.dense else PRIMES[k])
            w = torch.stack([1.0 - frac[:, k], frac[:, k]], dim=-1)
            term, w = term.view(shape), w.view(shape)
            if index is None:
                index, weight = term, w
            else:
                index = index + term if level.dense else index ^ term
                weight = weight * w
        index = index.reshape(n, 1 << d)  # type: ignore[union-attr]
        weight = weight.reshape(n, 1 << d)  # type: ignore[union-attr]
        # hashed levels hold 2^log2_hashmap_size rows: the modulo is a mask; dense ones wrap around at the far faces
        return (index & (level.size - 1) if not level.dense else index % level.size), weight

    def _forward_torch(self, x: Tensor) -> Tensor:
        n, d = x.shape
        x = x.clamp(0.0, 1.0).float()
        table = self.params.view(self.n_entries, self.n_features_per_level)
        bounds = [(level.offset, level.offset + level.size) for level in self.levels]
        if not torch.is_grad_enabled() or not (x.requires_grad or self.params.requires_grad):
            # inference: one weighted gather per level, nothing kept alive across levels
            out = []
            for level, (start, stop) in zip(self.levels, bounds):
                rows, weight = self._level_indices(x, level)
                weight = weight.to(table.dtype)
                out.append(F.embedding_bag(rows, table[start:stop], per_sample_weights=weight, mode="sum"))
            return torch.cat(out, dim=-1)
        pairs = [self._level_indices(x, level) for level in self.levels]
        if not x.requires_grad:
            # gradients reach the table only
            rows = [p[0] for p in pairs]
            weights = [p[1].to(table.dtype) for p in pairs]
            return _WeightedRows.apply(table, bounds, rows, weights).reshape(n, self.n_output_dims)
        # gradients also reach the points (analytic normals, possibly differentiated again): one plain gather of all
        # levels (level-major, so each level is read in one run) and a sum, which autograd differentiates twice
        index = torch.stack([p[0] + level.offset for p, level in zip(pairs, self.levels)])  # (L, N, 2^D)
        weight = torch.stack([p[1] for p in pairs]).to(table.dtype)
        values = table.index_select(0, index.reshape(-1)).view(self.n_levels, n, 1 << d, -1)
        out = (weight[..., None] * values).sum(dim=2)  # (L, N, F)
        return out.transpose(0, 1).reshape(n, self.n_output_dims)

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # the flat parameter vector is the same in both backends; only its key differs
        own, other = (prefix + "tcnn.params", prefix + "params")
        if self.backend == "torch":
            own, other = other, own
        if other in state_dict and own not in state_dict:
            state_dict[own] = state_dict.pop(other)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
