"""Optimizer and LR scheduler from config: one optimizer, parameter groups named by dotted module paths."""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from typing import Any, Dict, List, Literal, Optional

import torch
import torch.nn as nn

from framework.config import config_error, config_key


@dataclass
class OptimizerConfig:
    """``system.optimizer``: threestudio's shape."""

    name: str = "AdamW"
    """A class of ``torch.optim`` (Adam, AdamW, SGD, ...)."""
    args: Dict[str, Any] = field(default_factory=lambda: {"lr": 1e-3})
    """Keyword arguments of the optimizer, the defaults of every group (lr, betas, eps, weight_decay). Where the
    class has a fused implementation (Adam, AdamW, SGD, Adagrad) and ``args`` sets none of ``fused``, ``foreach``,
    ``differentiable``, it is used (``fused: true``): one kernel for all parameters instead of one per tensor, the
    same update to float tolerance. ``fused: false`` keeps PyTorch's own default."""
    params: Optional[Dict[str, Dict[str, Any]]] = None
    """Parameter groups: a dotted module path of the system (``geometry.encoding``, ``guidance``) -> group options
    (e.g. ``{lr: 0.01}``). Trainable parameters in no listed group form a group with ``args`` alone."""


@dataclass
class SchedulerConfig:
    """``system.scheduler``: a ``torch.optim.lr_scheduler`` class."""

    name: str
    """A class of ``torch.optim.lr_scheduler`` (StepLR, ExponentialLR, CosineAnnealingLR, LinearLR, ...)."""
    interval: Literal["step", "epoch"] = "step"
    """When it steps: 'step' or 'epoch'."""
    args: Dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the scheduler."""


def _key(system: nn.Module, field: str) -> str:
    """The full dotted key of ``system.<field>`` (the system's own key helper when it has one)."""
    key = getattr(system, "key", None)
    return key(field) if callable(key) else config_key("system", field)


def build_param_groups(system: nn.Module, cfg: OptimizerConfig) -> List[Dict[str, Any]]:
    """Parameter groups for ``cfg.params``; every trainable parameter lands in exactly one group."""
    named = {id(p): n for n, p in system.named_parameters() if p.requires_grad}
    taken: Dict[int, str] = {}
    groups: List[Dict[str, Any]] = []
    resolve = getattr(system, "param_group_modules", None) or (lambda p: [system.get_submodule(p)])
    for path, options in (cfg.params or {}).items():
        nested = [k for k, v in (options or {}).items() if isinstance(v, dict)]
        if nested:  # ``params.geometry.encoding.lr=0`` on the command line nests the dotted module name
            raise config_error(
                _key(system, f"optimizer.params.{path}"),
                f"group options must be values (lr: 0.01), got a mapping under '{nested[0]}'; to name the group "
                f"'{path}.{nested[0]}' on the command line, write system.optimizer.params[{path}.{nested[0]}].lr=...",
            )
        try:
            targets = [system.get_parameter(path)] if _is_param(system, path) else resolve(path)
        except AttributeError:
            modules = sorted(n for n, _ in system.named_modules() if n and n.count(".") < 2)
            raise config_error(
                _key(system, f"optimizer.params.{path}"),
                f"no module or parameter '{path}' in the system; choose from: {', '.join(modules)}",
            ) from None
        params = [p for t in targets for p in ([t] if isinstance(t, nn.Parameter) else t.parameters())]
        params = [p for p in params if p.requires_grad]
        for p in params:
            if id(p) in taken:
                raise config_error(
                    _key(system, f"optimizer.params.{path}"),
                    f"parameter '{named[id(p)]}' is also in group '{taken[id(p)]}'; list each module once",
                )
            taken[id(p)] = path
        if params:
            groups.append({"params": params, "name": path, **(options or {})})
    rest = [p for p in system.parameters() if p.requires_grad and id(p) not in taken]
    if rest:
        groups.append({"params": rest, "name": "default"})
    return groups


def _is_param(module: nn.Module, path: str) -> bool:
    if "." not in path:
        return path in dict(module.named_parameters(recurse=False))
    parent, _, leaf = path.rpartition(".")
    try:
        owner = module.get_submodule(parent)
    except AttributeError:
        return False
    return leaf in dict(owner.named_parameters(recurse=False))


def build_optimizer(system: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    cls = getattr(torch.optim, cfg.name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise config_error(
            _key(system, "optimizer.name"), f"'{cfg.name}' is not a torch.optim optimizer (e.g. Adam, AdamW)"
        )
    for where, options in [("args", cfg.args)] + [(f"params.{k}", v or {}) for k, v in (cfg.params or {}).items()]:
        lr = options.get("lr")
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float))):
            raise config_error(_key(system, f"optimizer.{where}.lr"), f"expected a number, got {lr!r}")
        check_finite_numbers(options, _key(system, f"optimizer.{where}"))
    groups = build_param_groups(system, cfg)
    if not groups:
        raise config_error(_key(system, "optimizer"), "the system has no trainable parameters")
    try:
        return cls(groups, **optimizer_arguments(cls, groups, cfg.args))
    except TypeError as e:
        raise config_error(_key(system, "optimizer.args"), str(e)) from None


def optimizer_arguments(cls: type, groups: List[Dict[str, Any]], args: Dict[str, Any]) -> Dict[str, Any]:
    """``args`` with ``fused=True`` added where ``cls`` has a fused step that can take every parameter and ``args``
    chooses no implementation itself.

    A VSD run steps hundreds of small LoRA tensors: PyTorch's default loops over them on CPU (the tiny model's step of
    the scene, 112 LoRA tensors and the camera embedding: 5.7 ms against 0.8 ms fused, benchmarks/profile_vsd.py) and on CUDA launches several kernels
    per tensor group, where the step is bound by launches. The update is AdamW's (SGD's, ...) to float tolerance
    (``tests/test_optim.py`` checks it against the closed form of a first step).
    """
    if any(k in args for k in ("fused", "foreach", "differentiable")):
        return dict(args)
    try:
        import inspect

        if "fused" not in inspect.signature(cls.__init__).parameters:
            return dict(args)
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except (ImportError, TypeError, ValueError):
        return dict(args)
    params = [p for g in groups for p in g["params"]]
    if not params or any(not p.is_floating_point() or p.is_sparse or p.device.type not in devices for p in params):
        return dict(args)
    return {**args, "fused": True}


def check_finite_numbers(options: Dict[str, Any], key: str) -> None:
    """Refuse a NaN or an infinity among free-form keyword arguments (``lr``, ``betas``, ``eps``), naming its key."""
    for name, value in options.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise config_error(config_key(key, name), f"must be a finite number, got {value!r}; set a finite number")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: Optional[SchedulerConfig], key: str = "system.scheduler"
) -> Optional[Dict[str, Any]]:
    if cfg is None:
        return None
    cls = getattr(torch.optim.lr_scheduler, cfg.name, None)
    if not isinstance(cls, type):
        raise config_error(config_key(key, "name"), f"'{cfg.name}' is not in torch.optim.lr_scheduler")
    check_finite_numbers(cfg.args, config_key(key, "args"))
    try:
        scheduler = cls(optimizer, **cfg.args)
    except TypeError as e:
        raise config_error(config_key(key, "args"), str(e)) from None
    return {"scheduler": scheduler, "interval": cfg.interval}
