"""Data-module plumbing shared by every data module: step-indexed random batches, seeded per rank.

Training batches are drawn by ``StepBatchDataset``: batch ``i`` comes from a generator seeded with
``(seed, rank, i)``. Lightning fetches a batch ahead of the step that uses it, and a resumed run starts at its
checkpoint's step; indexing the randomness by the batch number (not by a shared generator's history) makes both
exact: a resumed run sees the same batches as an uninterrupted one, and each DDP rank draws its own.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Optional

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from framework.module import Configurable
from framework.utils.seeding import generator


class StepBatchDataset(IterableDataset):
    """Endless iterable of batches; batch ``i`` is ``sample_fn(i, generator(seed, rank, i))``."""

    def __init__(
        self,
        sample_fn: Callable[[int, torch.Generator], Dict[str, Any]],
        seed: int = 0,
        rank: int = 0,
        start_fn: Optional[Callable[[], int]] = None,
    ):
        super().__init__()
        self.sample_fn = sample_fn
        self.seed = seed
        self.rank = rank
        self.start_fn = start_fn or (lambda: 0)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        # Read when iteration starts: after Lightning has restored a resumed run's global step.
        index = int(self.start_fn())
        while True:
            yield self.sample_fn(index, generator(self.seed, self.rank, index))
            index += 1


def _identity(batch: Any) -> Any:
    return batch


class BaseDataModule(Configurable, pl.LightningDataModule):
    """A registered Lightning data module with a strictly parsed ``Config``.

    Subclasses implement ``sample_train(index, generator)`` (one training batch) and ``val_dataset`` /
    ``test_dataset`` (map-style datasets of single views), and may override ``update_step`` (progressive
    resolution and other schedules read the global step).
    """

    def __init__(self, cfg: Any = None, seed: int = 0, prefix: str = "data"):
        pl.LightningDataModule.__init__(self)
        self._parse(cfg, prefix)
        self.seed = seed
        self.train_dataset: Optional[StepBatchDataset] = None
        self.configure()

    def sample_train(self, index: int, gen: torch.Generator) -> Dict[str, Any]:
        raise NotImplementedError

    def val_dataset(self) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def test_dataset(self) -> torch.utils.data.Dataset:
        return self.val_dataset()

    def _rank(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.global_rank) if trainer is not None else 0

    def _global_step(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.global_step) if trainer is not None else 0

    def setup(self, stage: Optional[str] = None) -> None:
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = StepBatchDataset(self.sample_train, self.seed, self._rank(), self._global_step)

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            self.setup("fit")
        return DataLoader(self.train_dataset, batch_size=None, num_workers=0, collate_fn=_identity)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_dataset(), batch_size=None, num_workers=0, collate_fn=_identity, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_dataset(), batch_size=None, num_workers=0, collate_fn=_identity, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
