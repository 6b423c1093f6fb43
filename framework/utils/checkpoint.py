"""Reading checkpoints safely (no code runs on load, and every way a file can be wrong gets one clear line), and
writing them atomically in their own folder (a kill at any moment leaves the previous file intact)."""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterable, Iterator, List, Optional, Tuple

import torch

from framework.errors import CheckpointError
from framework.utils.paths import path_status, special_file


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> Dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with one-line errors for a missing, foreign, truncated, damaged or unsafe
    file (and for a FIFO or device, which would block or stream forever). The fields this project and Lightning read
    are checked for their types (:func:`check_structure`)."""
    p = Path(path)
    st = path_status(p, what)
    if st is None:
        raise CheckpointError(f"{what} '{path}' does not exist; check the path (e.g. <trial>/ckpts/last.ckpt)")
    if p.is_dir():
        raise CheckpointError(f"{what} '{path}' is a folder; give the .ckpt file inside it (e.g. {p / 'last.ckpt'})")
    kind = special_file(st)
    if kind is not None:
        raise CheckpointError(f"{what} '{path}' is {kind}, not a checkpoint file; give a .ckpt file")
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError(f"{what} '{path}' cannot be read: {e.strerror or e}") from None
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save writes a zip archive (or, long ago, a pickle)
        shown = f"starts with {head!r}" if head else "is empty"
        raise CheckpointError(f"{what} '{path}' is not a PyTorch checkpoint (the file {shown})")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names the refused global as "Unsupported global: GLOBAL x" or "unsupported GLOBAL x whose module ..."
        found = re.search(r"\bGLOBAL ([\w.]+)", str(e))
        if found or "GLOBAL" in str(e):
            name = f" ({found.group(1)})" if found else ""
            raise CheckpointError(
                f"{what} '{path}' needs pickled code{name} to load and is refused (only tensors and plain data are "
                "read, so that a file from elsewhere cannot run code)"
            ) from None
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = next((line for line in lines if "Unsupported" in line), lines[0] if lines else type(e).__name__)
        raise CheckpointError(f"{what} '{path}' is not a readable PyTorch checkpoint: {detail[:160]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{what} '{path}' is not a readable PyTorch checkpoint (truncated or another format?): {first[:160]}"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{what} '{path}' holds a {type(data).__name__}, not a checkpoint dictionary")
    check_structure(data, path, what)
    return data


_FIELD_TYPES = {
    "state_dict": dict,
    "global_step": int,
    "epoch": int,
    "pytorch-lightning_version": str,
    "loops": dict,
    "callbacks": dict,
    "optimizer_states": list,
    "lr_schedulers": list,
    "framework": dict,
    "fault_tolerance": dict,
}


def _type_word(tp: type) -> str:
    return {dict: "a mapping", int: "an integer", str: "a string", list: "a list"}.get(tp, tp.__name__)


def check_structure(data: Dict[str, Any], path: str | Path, what: str = "checkpoint") -> None:
    """One line for a checkpoint whose fields do not have the types this project and Lightning read them as.

    A hand-edited or damaged file (``global_step: "abc"``, a list where the optimizer state should be, a number
    among the weights) would otherwise fail with a traceback deep inside Lightning's restore. Only fields that are
    present are checked (a bare state dict has none of them).
    """

    def damaged(field: str, problem: str) -> CheckpointError:
        return CheckpointError(
            f"{what} '{path}' is damaged: {field} {problem}; use another checkpoint of the run "
            "(e.g. an earlier ckpts/epoch=*-step=*.ckpt)"
        )

    if "state_dict" not in data and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return  # a bare state dict
    for field, tp in _FIELD_TYPES.items():
        if field in data and (not isinstance(data[field], tp) or (tp is int and isinstance(data[field], bool))):
            raise damaged(f"'{field}'", f"is {type(data[field]).__name__} {str(data[field])[:40]!r}, not {_type_word(tp)}")
    for field in ("global_step", "epoch"):
        if field in data and data[field] < 0:
            raise damaged(f"'{field}'", f"is {data[field]}, below 0")
    bad = [k for k, v in (data.get("state_dict") or {}).items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise damaged("the weights", f"hold values that are not tensors at {few([str(k) for k in bad])}")
    meta = data.get("framework") or {}
    names_ok = all(isinstance(meta.get(k), (str, type(None))) for k in ("optimizer", "scheduler"))
    if not (isinstance(meta.get("system_type", ""), str) and isinstance(meta.get("global_step", 0), int) and names_ok):
        raise damaged("'framework'", f"holds {str(meta)[:80]!r}, not a system type and a step")
    streak = (data.get("fault_tolerance") or {}).get("nonfinite_streak", 0)
    if not isinstance(streak, int) or isinstance(streak, bool) or streak < 0:
        raise damaged("'fault_tolerance.nonfinite_streak'", f"is {streak!r}, not a count")
    for i, opt in enumerate(data.get("optimizer_states") or []):
        where = f"'optimizer_states[{i}]'"
        if not isinstance(opt, dict) or not isinstance(opt.get("state"), dict):
            raise damaged(where, "is not an optimizer state (a mapping with 'state' and 'param_groups')")
        groups = opt.get("param_groups")
        if not isinstance(groups, list) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) and all(isinstance(p, int) for p in g["params"])
            for g in groups
        ):
            raise damaged(f"{where}.param_groups", "are not parameter groups (mappings with a 'params' list)")
        for index, entry in opt["state"].items():
            if not isinstance(entry, dict) or not all(isinstance(v, (torch.Tensor, int, float)) for v in entry.values()):
                raise damaged(f"{where}.state[{index!r}]", "is not a mapping of tensors")
    if not all(isinstance(s, dict) for s in data.get("lr_schedulers") or []):
        raise damaged("'lr_schedulers'", "hold something else than scheduler states (mappings)")


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


def state_mismatch(
    module: torch.nn.Module, state: Dict[str, torch.Tensor], ignore_prefixes: Optional[Iterable[str]] = None
) -> List[str]:
    """What keeps ``state`` from loading strictly into ``module``: missing, unexpected and mis-shaped keys, named."""
    ignore = tuple(f"{p}." for p in (ignore_prefixes or ()))
    state = {k: v for k, v in state.items() if not k.startswith(ignore)}
    own = {k: v for k, v in module.state_dict().items() if not k.startswith(ignore)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(getattr(state[k], "shape", ()))
    )
    problems = []
    if missing:
        problems.append(f"missing keys {few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {few(unexpected)}")
    if mismatched:
        problems.append(
            "shape mismatch "
            + few([f"{k} {tuple(getattr(state[k], 'shape', ()))} vs {tuple(own[k].shape)}" for k in mismatched])
        )
    return problems


def nonfinite_tensors(state: Dict[str, Any]) -> List[str]:
    """Keys of the floating-point tensors of ``state`` that hold a NaN or an Inf."""
    return [
        k
        for k, v in state.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


def check_finite(state: Dict[str, Any], path: str | Path, what: str = "checkpoint") -> None:
    """Fail with one line when a weight of ``state`` is NaN or Inf (such weights only spread NaN)."""
    bad = nonfinite_tensors(state)
    if bad:
        raise CheckpointError(
            f"{what} '{path}' holds NaN or Inf weights in {few(bad)}; use a checkpoint saved before the run diverged"
        )


def load_state_into(
    module: torch.nn.Module,
    state: Dict[str, torch.Tensor],
    path: str | Path,
    ignore_prefixes: Optional[Iterable[str]] = None,
) -> None:
    """Load ``state`` strictly into ``module``; missing, unexpected or mis-shaped keys are named in one line.

    The load itself is the check (modules may rename keys of other backends while loading, as the hash grid does);
    keys under ``ignore_prefixes`` are neither taken nor required.
    """
    ignore = tuple(f"{p}." for p in (ignore_prefixes or ()))
    state = {k: v for k, v in state.items() if not k.startswith(ignore)}
    try:
        result = module.load_state_dict(state, strict=False)
        problems = []
        missing = sorted(k for k in result.missing_keys if not k.startswith(ignore))
        unexpected = sorted(k for k in result.unexpected_keys if not k.startswith(ignore))
        if missing:
            problems.append(f"missing keys {few(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {few(unexpected)}")
    except RuntimeError as e:  # shapes that do not match (load_state_dict raises for them even when not strict)
        problems = state_mismatch(module, state, ignore_prefixes) or [str(e).strip().splitlines()[-1][:200]]
    if problems:
        raise CheckpointError(
            f"checkpoint '{path}' does not fit this system ({'; '.join(problems)}); "
            "was it written with another config?"
        )


def few(items: list, n: int = 4) -> str:
    """The first ``n`` items and the count, for one-line messages: ``[a, b, ...] (7)``."""
    shown = ", ".join(items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}] ({len(items)})"


# ---------------------------------------------------------------------------------------------- atomic writes
TEMPORARY_SUFFIX = ".tmp"


def _temporary_beside(path: Path) -> Tuple[int, Path]:
    """A new temporary file in ``path``'s own folder (so on its file system), named ``.<name>.<pid>.<random>.tmp``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    return fd, Path(tmp)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextmanager
def _atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write that replaces ``path`` when the block ends without error (see
    :func:`atomic_write_bytes`): written beside it, flushed to disk, moved over it in one ``os.replace``."""
    path = Path(path)
    fd, tmp = _temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    """Write ``data`` to ``path`` so that ``path`` is at every moment either its old content or all of the new one.

    The bytes go to a temporary file in the same folder (the same file system: never TMPDIR, whose copy across file
    systems is not atomic and whose lack of room would be blamed on the trial folder), are flushed to disk
    (``fsync``), and the file replaces ``path`` in one ``os.replace``. A process killed meanwhile leaves the old file
    intact (and at worst the temporary, which :func:`remove_stale_temporaries` removes); an error removes it.
    """
    with _atomic_file(path) as f:
        f.write(data)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` written atomically (see :func:`atomic_write_bytes`)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(buffer.getbuffer(), path)


def atomic_copy(source: str | Path, path: str | Path) -> None:
    """Copy ``source`` to ``path`` atomically (see :func:`atomic_write_bytes`), streaming rather than in memory."""
    with _atomic_file(path) as f, open(source, "rb") as src:
        shutil.copyfileobj(src, f, 16 * 1024 * 1024)


def remove_stale_temporaries(folder: str | Path) -> List[Path]:
    """Remove the temporaries of atomic writes in ``folder`` whose writing process is gone (killed mid-write)."""
    removed = []
    for p in Path(folder).glob(f".*{TEMPORARY_SUFFIX}"):
        found = re.fullmatch(r"\.(.+)\.(\d+)\.[^.]+" + re.escape(TEMPORARY_SUFFIX), p.name)
        if found is None or int(found.group(2)) == os.getpid():
            continue
        pid = int(found.group(2))
        try:
            os.kill(pid, 0)
            continue  # still running: its write may be in progress
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed
