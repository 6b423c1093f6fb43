"""Random state derived from (seed, rank, step), so that a resumed run draws exactly what an uninterrupted one does."""

from __future__ import annotations

import random

import numpy as np
import torch


def derived_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed mixed from ``seed`` and ``keys`` (SplitMix64 steps), stable across processes and platforms."""
    x = seed & 0xFFFFFFFFFFFFFFFF
    for k in keys:
        x = (x ^ (k & 0xFFFFFFFFFFFFFFFF)) + 0x9E3779B97F4A7C15
        x &= 0xFFFFFFFFFFFFFFFF
        x ^= x >> 30
        x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 27
        x = (x * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (all devices) with one value."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def generator(seed: int, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch Generator seeded with ``derived_seed(seed, *keys)``."""
    g = torch.Generator(device=device)
    g.manual_seed(derived_seed(seed, *keys))
    return g
