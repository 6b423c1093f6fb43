"""A recipe's whole schedule compressed into a short run, so that every step-dependent transition happens in a test.

Every step-valued number of a config is found from the declared types, never from a list of recipes:

* the points of every ``Schedule`` value (loss weights, timestep ranges, ...), wherever it sits in the tree;
* every Config field declared ``Step`` (a step number) or ``Steps`` (a number of steps), also inside lists
  (``resolution_milestones``) and optionals (``anneal_start_step``);
* Lightning's step-valued keyword arguments (``LIGHTNING_STEPS``) and, for a scheduler stepped per step,
  the step-valued arguments of ``torch.optim.lr_scheduler`` classes (``SCHEDULER_STEPS``).

``compress`` maps them onto a run of about ``length`` steps: step numbers by the scale ``length / max_steps``, with
distinct step numbers kept at least ``MIN_GAP`` steps apart (so that ``lambda_opaque: [10000, 0, 1000, 10001]`` still
has a step before and a step after its jump), durations by the same scale (at least 1). Order is preserved, so every
transition of the full run happens, in the same order, in the short one.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import re
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from framework.config import iter_fields, step_kind
from framework.schedule import Schedule

MIN_GAP = 2
"""Compressed distance between two distinct step numbers of the full run."""

LIGHTNING_STEPS: Dict[str, str] = {
    "trainer.max_steps": "point",
    "trainer.min_steps": "point",
    "trainer.val_check_interval": "duration",  # an integer is a number of steps (a float: a fraction of an epoch)
    "trainer.log_every_n_steps": "duration",
    "checkpoint.every_n_train_steps": "duration",
}
"""Keyword arguments of ``pytorch_lightning.Trainer`` / ``ModelCheckpoint`` that count training steps."""

LIGHTNING_NOT_STEPS: Dict[str, str] = {
    "trainer.num_sanity_val_steps": "validation batches before training, not training steps",
    "trainer.max_epochs": "epochs (a training set here is endless: one epoch)",
    "trainer.min_epochs": "epochs",
    "trainer.check_val_every_n_epoch": "epochs",
    "trainer.reload_dataloaders_every_n_epochs": "epochs",
    "checkpoint.every_n_epochs": "epochs",
}
"""Lightning arguments whose names look step-valued but are not (checked by the tests to keep both tables whole)."""

SCHEDULER_STEPS: Dict[str, str] = {
    "step_size": "duration",
    "milestones": "point",
    "T_max": "duration",
    "T_0": "duration",
    "total_iters": "duration",
    "total_steps": "duration",
    "step_size_up": "duration",
    "step_size_down": "duration",
    "warmup_steps": "duration",
    "steps_per_epoch": "duration",
}
"""Step-valued arguments of ``torch.optim.lr_scheduler`` classes, for a scheduler stepped every training step."""

SCHEDULER_NOT_STEPS: Dict[str, str] = {"T_mult": "a factor between restart periods"}
"""Scheduler arguments whose names look step-valued but are not."""

CONFIG_NOT_STEPS: Dict[str, str] = {
    "xs_inv_steps": "DDIM-inversion steps within one training step (ISM)",
    "inversion_n_steps": "DDIM-inversion grid size within one training step (SDI)",
    "negative_domain_max_step": "a diffusion timestep threshold (NFSD), not a training step",
    "lora_fit_timesteps": "diffusion timesteps of the LoRA-fit diagnostic, not training steps",
}
"""Config fields whose names look step-valued but count something else (diffusion timesteps, inversion steps)."""

STEP_LIKE_NAME = re.compile(r"(?<!time)step|milestone|interval|until|iter|epoch|_every|^every", re.IGNORECASE)
"""Names of integer fields that look like training-step quantities; each must be declared (or listed as not).
Diffusion timesteps (``lora_fit_timesteps``) are another quantity and do not match."""


@dataclasses.dataclass
class StepValue:
    """One step-valued number (or schedule) of a config: its dotted key, kind and value."""

    key: str
    kind: str  # "point", "duration" or "schedule"
    value: Any


def step_values(exp: Any) -> List[StepValue]:
    """Every step-valued quantity of a parsed ``ExperimentConfig`` (see the module docstring)."""
    found: List[StepValue] = []
    for key, value, tp in iter_fields(exp):
        if isinstance(value, Schedule):
            found.append(StepValue(key, "schedule", value))
        elif isinstance(value, dict):
            found += [StepValue(f"{key}.{k}", "schedule", v) for k, v in value.items() if isinstance(v, Schedule)]
        kind = step_kind(tp)
        if kind in ("point", "duration") and value is not None:
            found.append(StepValue(key, kind, value))
    for section in ("trainer", "checkpoint"):
        for name, value in (getattr(exp, section) or {}).items():
            kind = LIGHTNING_STEPS.get(f"{section}.{name}")
            if kind is not None and isinstance(value, int) and not isinstance(value, bool):
                found.append(StepValue(f"{section}.{name}", kind, value))
    scheduler = getattr(exp.system, "scheduler", None)
    if scheduler is not None and scheduler.interval == "step":
        for name, value in scheduler.args.items():
            if name in SCHEDULER_STEPS:
                found.append(StepValue(f"system.scheduler.args.{name}", SCHEDULER_STEPS[name], value))
    return found


def _ints(value: Any) -> List[int]:
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


class StepMap:
    """The monotone map of full-run steps onto the short run (see the module docstring).

    A duration that divides the full run (``val_check_interval: 100`` of 300 steps: validations at 100, 200, 300)
    keeps dividing the short one, which is lengthened to a common multiple where needed, so that the last
    validation or checkpoint still falls on the last step.
    """

    def __init__(self, points: List[int], max_steps: int, length: int, durations: Sequence[int] = ()):
        self.max_steps = max_steps
        self.scale = length / max_steps
        self.table: Dict[int, int] = {}
        previous: Optional[int] = None
        for p in sorted(set(points) | {0, max_steps}):
            mapped = round(p * self.scale)
            if previous is not None:
                mapped = max(mapped, previous + MIN_GAP)
            self.table[p] = mapped
            previous = mapped
        # events per run of the durations that divide the run and do not shrink to every step
        self.events = {
            max_steps // d
            for d in durations
            if 0 < d <= max_steps and max_steps % d == 0 and round(d * self.scale) > 1
        }
        multiple = math.lcm(*self.events) if self.events else 1
        end = self.table[max_steps]
        new_end = -(-end // multiple) * multiple
        for p in self.table:
            if p >= max_steps:
                self.table[p] += new_end - end

    def point(self, step: int) -> int:
        return self.table[step]

    def duration(self, steps: int) -> int:
        if steps == 0:
            return 0  # a zero interval (Lightning's "never") stays zero
        if steps > 0 and self.max_steps % steps == 0 and self.max_steps // steps in self.events:
            return self.length // (self.max_steps // steps)
        return max(1, round(steps * self.scale))

    @property
    def length(self) -> int:
        return self.table[self.max_steps]


def step_map(exp: Any, length: int) -> StepMap:
    """The map for ``exp``: every step number it holds (schedule points included) gets a place."""
    max_steps = int((exp.trainer or {}).get("max_steps") or 0)
    if max_steps <= 0:
        raise ValueError("a compressed schedule needs trainer.max_steps")
    points: List[int] = []
    durations: List[int] = []
    for v in step_values(exp):
        if v.kind == "point":
            points += _ints(v.value)
        elif v.kind == "duration":
            durations += _ints(v.value)
        elif v.kind == "schedule":
            points += [s for s, _ in v.value.points]
    return StepMap(points, max_steps, length, durations)


def _set(container: Dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = container
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def compress(container: Dict[str, Any], exp: Any, length: int = 20) -> Tuple[Dict[str, Any], StepMap]:
    """A copy of the resolved config ``container`` (of the parsed ``exp``) with every step-valued number mapped.

    Schedules are written as ``{points: [[step, value], ...], interpolation: ...}``: the same function of the
    compressed step. Returns the new container and the map used.
    """
    mapping = step_map(exp, length)
    out = copy.deepcopy(container)
    for v in step_values(exp):
        if v.kind == "schedule":
            points = [[mapping.point(s), value] for s, value in v.value.points]
            _set(out, v.key, {"points": points, "interpolation": v.value.interpolation})
        else:
            convert = mapping.point if v.kind == "point" else mapping.duration
            mapped = [convert(s) for s in _ints(v.value)]
            _set(out, v.key, mapped if isinstance(v.value, (list, tuple)) else mapped[0])
    return out, mapping


# ------------------------------------------------------------------------------------------ the declarations
def config_dataclasses(root: type) -> Iterator[type]:
    """``root`` and every dataclass its fields name (nested configs), each once."""
    import typing

    seen: set = set()
    stack = [root]
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        yield cls
        for tp in typing.get_type_hints(cls, include_extras=True).values():
            stack += [t for t in _leaf_types(tp) if dataclasses.is_dataclass(t)]


def _leaf_types(tp: Any) -> Iterator[Any]:
    import typing

    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Annotated:
        yield from _leaf_types(args[0])
    elif args:
        for a in args:
            yield from _leaf_types(a)
    else:
        yield tp


def undeclared_step_fields(cls: type) -> List[str]:
    """Integer fields of ``cls`` whose names look step-valued but that are declared neither ``Step`` nor ``Steps``."""
    import typing

    hints = typing.get_type_hints(cls, include_extras=True)
    bad = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if (int in set(_leaf_types(tp)) and STEP_LIKE_NAME.search(f.name) and step_kind(tp) is None
                and f.name not in CONFIG_NOT_STEPS):
            bad.append(f"{cls.__module__}.{cls.__qualname__}.{f.name}")
    return bad


def undeclared_lightning_arguments() -> List[str]:
    """Integer arguments of Trainer / ModelCheckpoint / lr schedulers with step-like names in neither table."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    bad = []
    for section, target in (("trainer", pl.Trainer.__init__), ("checkpoint", ModelCheckpoint.__init__)):
        for name, param in inspect.signature(target).parameters.items():
            key = f"{section}.{name}"
            if STEP_LIKE_NAME.search(name) and key not in LIGHTNING_STEPS and key not in LIGHTNING_NOT_STEPS:
                if "int" in str(param.annotation):
                    bad.append(key)
    for cls in vars(torch.optim.lr_scheduler).values():
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.lr_scheduler.LRScheduler)):
            continue
        for name, param in inspect.signature(cls.__init__).parameters.items():
            default = param.default
            int_like = isinstance(default, int) and not isinstance(default, bool) or "int" in str(param.annotation)
            known = name in SCHEDULER_STEPS or name in SCHEDULER_NOT_STEPS or name == "last_epoch"
            if int_like and not known and _step_like_scheduler_arg(name):
                bad.append(f"{cls.__name__}.{name}")
    return bad


def _step_like_scheduler_arg(name: str) -> bool:
    return bool(re.search(r"step|milestone|iter|^T_|total|warmup", name))
