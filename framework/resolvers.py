"""The OmegaConf resolvers configs may use. None of them evaluates code.

| resolver | example | result |
| --- | --- | --- |
| ``add``, ``sub``, ``mul``, ``div``, ``idiv`` | ``${mul:${data.width},2}`` | arithmetic on two numbers |
| ``rmspace`` | ``${rmspace:${system.prompt_processor.prompt},_}`` | spaces replaced by the second argument |
| ``basename`` | ``${basename:path/to/file.obj}`` | ``file.obj`` |
| ``tuple2`` | ``${tuple2:0.5}`` | ``[0.5, 0.5]`` |
| ``gt0``, ``not0`` | ``${gt0:${system.loss.lambda_normal}}`` | ``x > 0``, ``x != 0`` |
| ``calc_exp_lr_decay_rate`` | ``${calc_exp_lr_decay_rate:0.1,10000}`` | ``factor ** (1 / n)`` |

These are the resolvers threestudio's configs use, so that its YAML files load unchanged.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict

from omegaconf import OmegaConf


def _rmspace(s: Any, sub: Any = "_") -> str:
    return str(s).replace(" ", str(sub))


RESOLVERS: Dict[str, Callable[..., Any]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "idiv": lambda a, b: a // b,
    "rmspace": _rmspace,
    "basename": lambda p: os.path.basename(str(p)),
    "tuple2": lambda s: [float(s), float(s)],
    "gt0": lambda s: s > 0,
    "not0": lambda s: s != 0,
    "calc_exp_lr_decay_rate": lambda factor, n: factor ** (1.0 / n),
}


# OmegaConf built-ins that are removed: ``oc.coerce`` imports the module its argument names.
REFUSED_RESOLVERS = ("oc.coerce",)


def register_resolvers() -> None:
    """Register every resolver once and remove the refused built-ins (idempotent)."""
    register = getattr(OmegaConf, "register_resolver", None) or OmegaConf.register_new_resolver
    for name, fn in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            register(name, fn)
    for name in REFUSED_RESOLVERS:
        OmegaConf.clear_resolver(name)
