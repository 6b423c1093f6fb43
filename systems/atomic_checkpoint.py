"""Checkpoints written atomically in the trial folder itself.

Lightning 2.6 saves through fsspec, whose local "transaction" writes a temporary file in ``TMPDIR`` and moves it
into place when done; when ``TMPDIR`` is on another file system the move is a copy, so a process killed during it
leaves a truncated ``last.ckpt`` (and a temporary file of the checkpoint's size in ``TMPDIR``), and a full ``TMPDIR``
looks like a full trial disk. :class:`AtomicCheckpointIO` writes into a temporary file beside the checkpoint, flushes it
to disk and renames it over the old one (``framework.utils.checkpoint.atomic_write_bytes``).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from framework.utils.checkpoint import atomic_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with an atomic save in the checkpoint's own folder (loading is unchanged)."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_save(checkpoint, path)
