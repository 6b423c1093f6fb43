"""Reading checkpoints safely: no code runs on load, and every way a file can be wrong gets one clear line."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

import torch

from framework.errors import CheckpointError


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> Dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with one-line errors for a missing, foreign, truncated or unsafe file."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{what} '{path}' does not exist; check the path (e.g. <trial>/ckpts/last.ckpt)")
    if p.is_dir():
        raise CheckpointError(f"{what} '{path}' is a folder; give the .ckpt file inside it (e.g. {p / 'last.ckpt'})")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise CheckpointError(
                f"{what} '{path}' needs pickled code to load and is refused (only tensors and plain data are "
                f"read, so that a file from elsewhere cannot run code): {first[:160]}"
            ) from None
        raise CheckpointError(f"{what} '{path}' is not a readable PyTorch checkpoint: {first[:160]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{what} '{path}' is not a readable PyTorch checkpoint (truncated or another format?): {first[:160]}"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{what} '{path}' holds a {type(data).__name__}, not a checkpoint dictionary")
    return data


def state_dict_of(data: Dict[str, Any], path: str | Path, what: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The model state dict of a Lightning checkpoint (or of a plain state dict)."""
    if "state_dict" in data and isinstance(data["state_dict"], dict):
        return data["state_dict"]
    if data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return data  # a bare state dict
    raise CheckpointError(f"{what} '{path}' has no 'state_dict'; it is not a checkpoint of this project")


def check_system(data: Dict[str, Any], system_type: str, path: str | Path) -> None:
    """Fail when the checkpoint was written by another system type."""
    meta = data.get("framework") or {}
    saved = meta.get("system_type")
    if saved is not None and saved != system_type:
        raise CheckpointError(
            f"checkpoint '{path}' was written by system '{saved}', not '{system_type}'; "
            f"use a config with system_type: {saved}"
        )


def load_state_into(
    module: torch.nn.Module,
    state: Dict[str, torch.Tensor],
    path: str | Path,
    ignore_prefixes: Optional[Iterable[str]] = None,
) -> None:
    """Load ``state`` strictly into ``module``; missing, unexpected or mis-shaped keys are named in one line."""
    ignore = tuple(f"{p}." for p in (ignore_prefixes or ()))
    state = {k: v for k, v in state.items() if not k.startswith(ignore)}
    own = {k: v for k, v in module.state_dict().items() if not k.startswith(ignore)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    problems = []
    if missing:
        problems.append(f"missing keys {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_few(unexpected)}")
    if mismatched:
        problems.append(
            "shape mismatch "
            + _few([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched])
        )
    if problems:
        raise CheckpointError(
            f"checkpoint '{path}' does not fit this system ({'; '.join(problems)}); "
            "was it written with another config?"
        )
    module.load_state_dict(state, strict=not ignore)


def _few(items: list, n: int = 4) -> str:
    shown = ", ".join(items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}] ({len(items)})"
