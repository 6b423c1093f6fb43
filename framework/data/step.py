"""``step-datamodule``: training steps without data, for systems whose state is all they optimise (image particles).

Each training batch holds only ``index`` (the step); validation and test have ``n_val_views`` / ``n_test_views``
items holding their index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch
from torch.utils.data import Dataset

from framework import registry
from framework.data.base import BaseDataModule


class _Indices(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return {"index": index}


@registry.register("data", "step-datamodule")
class StepDataModule(BaseDataModule):
    @dataclass
    class Config:
        n_val_views: int = 1
        """Items of a validation pass (the system decides what one renders)."""
        n_test_views: int = 1
        """Items of a test pass."""

    cfg: Config

    def sample_train(self, index: int, gen: torch.Generator) -> Dict[str, Any]:
        return {"index": index}

    def val_dataset(self) -> Dataset:
        return _Indices(self.cfg.n_val_views)

    def test_dataset(self) -> Dataset:
        return _Indices(self.cfg.n_test_views)
