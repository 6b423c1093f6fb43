"""What an exporter returns: named files that the system writes under ``save/it<step>-export/``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class ExportOutput:
    """One exported file."""

    filename: str
    """File name (may contain sub-folders) relative to the export folder; the suffix selects the format."""
    data: Any
    """``bytes``, a uint8 (H, W, 3) image, or an object with ``export(path)`` (e.g. a ``trimesh.Trimesh``)."""

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(self.data, (bytes, bytearray)):
            path.write_bytes(self.data)
        elif isinstance(self.data, np.ndarray):
            import imageio.v3 as iio

            iio.imwrite(path, self.data)
        elif hasattr(self.data, "export"):
            self.data.export(str(path))
        else:
            raise TypeError(f"cannot write export data of type {type(self.data).__name__} to {path}")
