"""The OmegaConf resolvers configs may use. None of them evaluates code.

| resolver | example | result |
| --- | --- | --- |
| ``add``, ``sub``, ``mul``, ``div``, ``idiv`` | ``${mul:${data.width},2}`` | arithmetic on two numbers |
| ``rmspace`` | ``${rmspace:${system.prompt_processor.prompt},_}`` | spaces replaced by the second argument |
| ``basename`` | ``${basename:path/to/file.obj}`` | ``file.obj`` |
| ``tuple2`` | ``${tuple2:0.5}`` | ``[0.5, 0.5]`` |
| ``gt0``, ``not0`` | ``${gt0:${system.loss.lambda_normal}}`` | ``x > 0``, ``x != 0`` |
| ``calc_exp_lr_decay_rate`` | ``${calc_exp_lr_decay_rate:0.1,10000}`` | ``factor ** (1 / n)`` |

These are the resolvers threestudio's configs use, so that its YAML files load unchanged. The arithmetic ones take
numbers only (``${mul:abc,1000000000}`` would otherwise build a 3 GB string) and refuse results that are not finite
or that exceed ``MAX_MAGNITUDE`` (a chain of ``mul`` doubles the digits at each link).
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict

from omegaconf import OmegaConf


MAX_MAGNITUDE = 1e18
"""The largest absolute value an arithmetic resolver returns."""


def _rmspace(s: Any, sub: Any = "_") -> str:
    return str(s).replace(" ", str(sub))


def _number(v: Any) -> float | int:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number, got {v!r}")
    return v


def _arithmetic(name: str, op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def resolver(a: Any, b: Any) -> Any:
        a, b = _number(a), _number(b)
        if name in ("div", "idiv") and b == 0:
            raise ValueError(f"{name}: division by zero ({a} / {b})")
        if name == "mul" and a != 0 and b != 0 and math.log10(abs(a)) + math.log10(abs(b)) > 18:
            raise ValueError(f"{name}: {a} * {b} is larger than {MAX_MAGNITUDE:g}")
        result = op(a, b)
        if not math.isfinite(result) or abs(result) > MAX_MAGNITUDE:
            raise ValueError(f"{name}: the result {result!r} is not finite or larger than {MAX_MAGNITUDE:g}")
        return result

    return resolver


def _exp_decay_rate(factor: Any, n: Any) -> float:
    factor, n = _number(factor), _number(n)
    if n == 0 or factor < 0:
        raise ValueError(f"calc_exp_lr_decay_rate: needs a factor >= 0 and n != 0, got {factor}, {n}")
    return factor ** (1.0 / n)


RESOLVERS: Dict[str, Callable[..., Any]] = {
    "add": _arithmetic("add", lambda a, b: a + b),
    "sub": _arithmetic("sub", lambda a, b: a - b),
    "mul": _arithmetic("mul", lambda a, b: a * b),
    "div": _arithmetic("div", lambda a, b: a / b),
    "idiv": _arithmetic("idiv", lambda a, b: a // b),
    "rmspace": _rmspace,
    "basename": lambda p: os.path.basename(str(p)),
    "tuple2": lambda s: [float(s), float(s)],
    "gt0": lambda s: s > 0,
    "not0": lambda s: s != 0,
    "calc_exp_lr_decay_rate": _exp_decay_rate,
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
