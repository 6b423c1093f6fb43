"""Checks run before a trial folder is created, so that a bad input fails in one line with nothing left behind.

* Lightning's keyword arguments (``trainer.*``, ``checkpoint.*``): values of plain annotated types are type-checked
  as Config fields are, and the objects are built here, so that Lightning's own checks of the values fail early too.
* ``resume=<ckpt>``: everything Lightning would read from the file and fail on with a traceback (weights that do not
  fit, NaN weights, a weights-only file, another optimizer layout) is checked first.
* The output folder: it must be writable (tried, not guessed from permission bits) and its disk must hold two
  checkpoints.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import typing
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Union

import torch

from framework.config import Bounds
from framework.errors import CheckpointError, ConfigError, UserError
from framework.utils.checkpoint import check_finite, load_state_into

try:
    from lightning_fabric.utilities.exceptions import MisconfigurationException
except ImportError:  # pragma: no cover
    MisconfigurationException = ValueError  # type: ignore[misc,assignment]

_PLAIN = (bool, int, float, str, type(None))


# ---------------------------------------------------------------------------------------------- Lightning arguments
def _plain_types(tp: Any) -> Optional[Set[type]]:
    """The plain types an annotation admits (Literal values count by type); None if it admits anything else."""
    origin = typing.get_origin(tp)
    if origin is Union:
        parts = [_plain_types(a) for a in typing.get_args(tp)]
        return None if any(p is None for p in parts) else set().union(*parts)  # type: ignore[arg-type]
    if origin is typing.Literal:
        return {type(a) for a in typing.get_args(tp)}
    return {tp} if tp in _PLAIN else None


def _admits(value: Any, types: Set[type]) -> bool:
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int):
        return int in types or float in types
    return any(isinstance(value, t) for t in types if t is not bool)


def _name(types: Set[type]) -> str:
    names = sorted("null" if t is type(None) else t.__name__ for t in types)
    return " or ".join(names)


def check_argument_types(
    target: Callable[..., Any], values: Dict[str, Any], prefix: str, source: Callable[[str], str]
) -> None:
    """Type-check ``values`` against ``target``'s annotations where those are plain (int, float, bool, str, null).

    ``source(dotted_key)`` says where a value came from (the YAML file or a command-line override).
    """
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # pragma: no cover - unresolvable annotations: leave the checks to Lightning
        return
    for key, value in values.items():
        types = _plain_types(hints[key]) if key in hints else None
        if types is not None and not _admits(value, types):
            raise ConfigError(
                f"config error: {prefix}.{key}: expected {_name(types)}, got {value!r} (in {source(f'{prefix}.{key}')})"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"config error: {prefix}.{key}: must be a finite number, got {value!r}; set a finite number "
                f"(in {source(f'{prefix}.{key}')})"
            )
        bounds = LIGHTNING_BOUNDS.get(f"{prefix}.{key}")
        if bounds is not None and _admits(value, {int, float}) and not bounds.admits(value):
            what = "an integer" if isinstance(value, int) else "a number"
            raise ConfigError(
                f"config error: {prefix}.{key}: must be {bounds.describe()}, got {value!r}; set {what} "
                f"{bounds.describe()} (in {source(f'{prefix}.{key}')})"
            )


LIGHTNING_BOUNDS = {
    "trainer.accumulate_grad_batches": Bounds(ge=1),
    "trainer.max_steps": Bounds(ge=1),  # -1 is Lightning's "no limit": with endless training data, a run that never ends
    "trainer.min_steps": Bounds(ge=0),
    "trainer.val_check_interval": Bounds(gt=0),  # 0 divides by zero inside Lightning
    "trainer.check_val_every_n_epoch": Bounds(ge=1),
    "trainer.log_every_n_steps": Bounds(ge=1),  # 0 would log nothing
    "trainer.gradient_clip_val": Bounds(ge=0),  # a negative norm would flip every gradient
    "checkpoint.every_n_train_steps": Bounds(ge=0),
    "checkpoint.every_n_epochs": Bounds(ge=0),
}
"""Ranges of Lightning arguments whose bad values Lightning does not refuse at construction: they fail deep inside a
run, or never end it, or change it in silence."""


def check_checkpoint_filename(values: Dict[str, Any], source: Callable[[str], str]) -> None:
    """``checkpoint.filename`` names a file inside the trial's ``ckpts/`` folder: no absolute path, no ``..``.

    Lightning joins it to its folder as given, so ``../../x`` or ``/etc/x`` would write anywhere; a subfolder
    (``stage1/{step}``) stays inside and is allowed.
    """
    name = values.get("filename")
    if name is None:
        return
    parts = Path(str(name)).parts
    if Path(str(name)).is_absolute() or ".." in parts or str(name).startswith("~") or "\0" in str(name):
        raise ConfigError(
            f"config error: checkpoint.filename: {str(name)!r} would write outside the trial's ckpts/ folder; give a "
            f"name inside it, e.g. '{{epoch}}-{{step}}' (in {source('checkpoint.filename')})"
        )


def build_lightning(what: str, build: Callable[[], Any], values: Dict[str, Any]) -> Any:
    """``build()``, with Lightning's rejection of a config value turned into one line naming the section."""
    try:
        return build()
    except (TypeError, ValueError, AssertionError, MisconfigurationException) as e:
        msg = (str(e).strip().splitlines() or [""])[0] or type(e).__name__
        given = ", ".join(f"{k}={v!r}" for k, v in values.items()) or "none"
        raise ConfigError(f"config error: {what}: {msg[:300]} ({what} values given: {given})") from None


# ---------------------------------------------------------------------------------------------- resume checks
def check_resume(system: Any, data: Dict[str, Any], path: str, mode: str, max_steps: Optional[int] = None) -> None:
    """Check, before Lightning reads it, everything of ``resume=<path>`` that Lightning would fail on with a traceback,
    or that would make the run silently differ from its config.

    Weights must be finite and load strictly into the system (they are loaded here; Lightning loads the same ones
    again). To continue training, the file must also hold optimizer and scheduler states laid out as this config's:
    the same parameter groups (names and sizes), optimizer state tensors of the parameters' shapes and finite, and a
    step below ``trainer.max_steps``. Optimizer hyperparameters the config changes (a new ``lr``) are applied when
    training resumes (``BaseSystem.on_train_start``), so that ``configs/parsed.yaml`` tells the truth; a new ``lr``
    under a learning-rate scheduler, whose state holds the old one, is refused.
    """
    state = data.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(
            f"resume '{path}' has no 'state_dict': it is not a training checkpoint of this project "
            "(to start from bare weights, use system.weights=<file>)"
        )
    check_finite(state, path, "resume")
    load_state_into(system, state, path)  # the same strict load Lightning makes (it loads the same weights again)
    if mode != "train":
        return
    if "optimizer_states" not in data or "lr_schedulers" not in data:
        raise CheckpointError(
            f"resume '{path}' holds weights only (saved with checkpoint.save_weights_only=true) and cannot continue "
            f"a run; start a new one from its weights with system.weights={path}"
        )
    step = int(data.get("global_step", 0))
    if max_steps is not None and max_steps >= 0 and step >= max_steps:
        raise CheckpointError(
            f"resume '{path}' is at step {step}, which is not below trainer.max_steps ({max_steps}): there is nothing "
            f"left to train; raise trainer.max_steps to continue, or use --test / --export with resume={path}"
        )
    meta = data.get("framework") or {}
    for what, saved_name, name in (
        ("optimizer", meta.get("optimizer"), system.cfg.optimizer.name),
        ("scheduler", meta.get("scheduler", False), system.cfg.scheduler.name if system.cfg.scheduler else None),
    ):
        if saved_name is not False and saved_name is not None and name is not None and saved_name != name:
            raise CheckpointError(
                f"resume '{path}' was trained with the {what} {saved_name}, this config uses {name} "
                f"(system.{what}.name), whose state cannot continue {saved_name}'s; resume with {saved_name}, or "
                f"start a new run from its weights with system.weights={path}"
            )
    built = system.configure_optimizers()
    optimizer = built["optimizer"] if isinstance(built, dict) else built
    expected = optimizer.param_groups
    saved_opt = data["optimizer_states"][0] if data["optimizer_states"] else {"state": {}, "param_groups": []}
    saved = saved_opt["param_groups"]

    def layout(groups: List[Dict[str, Any]]) -> str:
        return ", ".join(f"{g.get('name', '?')} ({len(g['params'])})" for g in groups) or "none"

    fix = f"resume with the config it was trained with, or start from its weights with system.weights={path}"
    if [(g.get("name"), len(g["params"])) for g in saved] != [(g.get("name"), len(g["params"])) for g in expected]:
        raise CheckpointError(
            f"resume '{path}' was saved with optimizer parameter groups {layout(saved)}, this config makes "
            f"{layout(expected)}; {fix}"
        )
    params = [p for g in expected for p in g["params"]]
    for index, entry in saved_opt["state"].items():
        if not isinstance(index, int) or not 0 <= index < len(params):
            raise CheckpointError(f"resume '{path}' holds optimizer state for parameter #{index!r}, which this "
                                  f"config does not have ({len(params)} parameters); {fix}")
        for name, value in entry.items():
            if not torch.is_tensor(value) or value.dim() == 0:
                continue
            if tuple(value.shape) != tuple(params[index].shape):
                group = next(g.get("name", "?") for g in expected if any(q is params[index] for q in g["params"]))
                raise CheckpointError(
                    f"resume '{path}': the optimizer's {name} of a parameter of group '{group}' has shape "
                    f"{tuple(value.shape)}, the parameter {tuple(params[index].shape)}; {fix}"
                )
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise CheckpointError(
                    f"resume '{path}': the optimizer state ({name}) holds NaN or Inf; use a checkpoint saved before "
                    f"the run diverged, or start from its weights with system.weights={path}"
                )
    n_sched = len(data["lr_schedulers"])
    want = 0 if system.cfg.scheduler is None else 1
    if n_sched != want:
        raise CheckpointError(
            f"resume '{path}' was saved with {n_sched} learning-rate scheduler(s), this config has {want} "
            "(system.scheduler); resume with the config it was trained with"
        )
    if want and data["lr_schedulers"]:
        check_scheduler_arguments(system.cfg.scheduler, built["lr_scheduler"]["scheduler"], data["lr_schedulers"][0],
                                  path)
    system.resume_hyperparameters = changed_hyperparameters(system, saved, expected, path, scheduled=want > 0)


def check_scheduler_arguments(cfg: Any, scheduler: Any, saved: Dict[str, Any], path: str) -> None:
    """A scheduler's saved state replaces its arguments when Lightning restores it: an argument the config changes
    (``system.scheduler.args.step_size``) would be silently ignored, so it is refused, naming the values."""
    for name, value in cfg.args.items():
        if name in saved and hasattr(scheduler, name) and not _same(saved[name], getattr(scheduler, name)):
            raise CheckpointError(
                f"resume '{path}': system.scheduler.args.{name} is {getattr(scheduler, name)!r} but the run was "
                f"trained with {saved[name]!r}, and the scheduler's saved state would keep {saved[name]!r}; resume "
                f"with {name}: {saved[name]!r}, or start a new run from its weights with system.weights={path}"
            )


# How the step is computed, not what it computes: a resumed run keeps its saved implementation (a for-loop state's
# step counters live where the loop keeps them, not where a fused kernel expects them).
_NOT_HYPERPARAMETERS = {"params", "name", "initial_lr", "fused", "foreach", "capturable", "differentiable"}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def changed_hyperparameters(
    system: Any, saved: List[Dict[str, Any]], expected: List[Dict[str, Any]], path: str, scheduled: bool
) -> List[Dict[str, Any]]:
    """Per parameter group, the optimizer hyperparameters the config sets differently from the checkpoint.

    Printed as one note line; applied when training resumes. A changed ``lr`` under a scheduler is refused: the
    scheduler's saved state (its base rates, its position) belongs to the old rate.
    """
    changes: List[Dict[str, Any]] = []
    shown = []
    for old, new in zip(saved, expected):
        diff = {}
        for key, value in new.items():
            if key in _NOT_HYPERPARAMETERS:
                continue
            if key not in old:  # a hyperparameter the saved optimizer did not have: the config's value
                diff[key] = value
                shown.append(f"{new.get('name', '?')} {key} (new) {value}")
                continue
            before = old.get("initial_lr", old[key]) if (key == "lr" and scheduled) else old[key]
            if not _same(before, value):
                if key == "lr" and scheduled:
                    raise CheckpointError(
                        f"resume '{path}': parameter group '{new.get('name', '?')}' was trained with lr {before} under "
                        f"system.scheduler, this config sets {value}; the scheduler's state follows the old rate, so "
                        f"resume with lr {before}, or start a new run from its weights with system.weights={path}"
                    )
                diff[key] = value
                shown.append(f"{new.get('name', '?')} {key} {before} -> {value}")
        changes.append(diff)
    if shown:
        print(
            f"note: resume: the config's optimizer values replace the checkpoint's ({'; '.join(shown)})",
            file=sys.stderr,
        )
    return changes


# ---------------------------------------------------------------------------------------------- output space
def checkpoint_bytes(system: torch.nn.Module) -> int:
    """Estimated size of one training checkpoint: the state dict plus two optimizer moments per trainable value."""
    state = sum(t.numel() * t.element_size() for t in system.state_dict().values() if torch.is_tensor(t))
    trainable = sum(p.numel() * p.element_size() for p in system.parameters() if p.requires_grad)
    return state + 2 * trainable


def _existing_ancestor(path: Path) -> Path:
    from framework.utils.paths import path_status

    path = path.absolute()
    while path_status(path, "the trial folder") is None and path != path.parent:
        path = path.parent
    return path


def _size(n: float) -> str:
    """Bytes in decimal units, e.g. ``33.8 MB``."""
    unit = "B"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            break
        n /= 1000
    return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"


MARGIN_BYTES = 32 * 1024 * 1024
"""Room for configs, logs, validation images and videos beside the checkpoints."""


def check_output_space(trial: Path, system: torch.nn.Module, checkpoints: int = 2) -> None:
    """Fail unless the trial folder can be created and its disk holds ``checkpoints`` checkpoints plus a margin.

    Training needs two: the next scheduled checkpoint and ``last.ckpt`` (or an interrupted run's pair). Writing is
    tried (a folder made and removed), since permission bits do not tell for root, read-only or kernel file systems.
    """
    base = _existing_ancestor(Path(trial))
    if not base.is_dir():
        raise UserError(
            f"cannot create the trial folder {trial}: {base} is a file, not a folder; "
            "set exp_root_dir=<a writable folder>"
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-test-", dir=base))
    except OSError as e:
        raise UserError(
            f"cannot write the trial folder {trial}: {base}: {e.strerror or e}; set exp_root_dir=<a writable folder>"
        ) from None
    free = shutil.disk_usage(base).free
    one = checkpoint_bytes(system)
    need = checkpoints * one + MARGIN_BYTES
    if free < need:
        raise UserError(
            f"the disk of {base} has {_size(free)} free; this run needs about {_size(need)} "
            f"({checkpoints} checkpoints of {_size(one)}, logs and images); free some space or set "
            "exp_root_dir=<another disk>"
        )
