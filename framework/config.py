"""Strict, typed parsing of OmegaConf configs into nested ``Config`` dataclasses.

Every module declares ``@dataclass class Config`` with a one-line docstring under each field. ``parse_structured``
turns a plain mapping into that dataclass and fails on the first problem with one line that names the full dotted key
(``system.guidance.guidance_scal``), the file it came from and the fix: an unknown key (with the closest valid
name), a value of the wrong type, a missing required value. A field ``X_type`` beside a field ``X`` names a registered
module of kind ``X`` (see ``framework.registry.TYPE_KEYS``): the parser resolves it and parses ``X`` with that module's
Config, so a whole experiment is validated before anything heavy is built.

Ranges are declared in the field's type, never checked by hand: ``typing.Annotated`` with :class:`Bounds`
(``Annotated[float, Bounds(gt=0, le=10)]``) or one of the aliases below (``PositiveInt``, ``NonNegativeInt``,
``PositiveFloat``, ``NonNegativeFloat``, ``Probability``). A bound applies to every number of the value: the value
itself, each item of a list or tuple, each value of a mapping, each value of a ``Schedule``. Bounds nest inside
``Optional``/``Union``/``List``/``Tuple`` (``Optional[PositiveInt]``, ``Tuple[PositiveFloat, PositiveFloat]``).
Every float (and schedule value) must be finite; a field that legitimately takes infinity says so with
``Bounds(allow_inf=True)`` (NaN is refused everywhere). Training-step quantities are declared ``Step`` (a step number)
or ``Steps`` (a number of steps), so that tools can find every step-valued field of a config (the compressed-schedule
recipe test maps them onto a short run).

A value out of range fails with one line naming the full dotted key, the value, the bound and the fix::

    config error: system.geometry.radius: must be > 0, got -1.0; set a number > 0 (in configs/x.yaml)
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import textwrap
import math
import typing
from typing import Annotated, Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from framework.errors import ConfigError
from framework.schedule import Schedule

MISSING = dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class Bounds:
    """A declarative range for a numeric config field, used as ``Annotated[float, Bounds(gt=0)]``.

    ``ge``/``gt``/``le``/``lt``: inclusive / exclusive lower and upper bounds (None: unbounded). ``allow_inf``: the
    field accepts +-infinity (floats are finite otherwise; NaN never passes). ``hint``: what the fix is, when more
    can be said than "set a number in range" (e.g. "a fraction of the timesteps").
    """

    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    allow_inf: bool = False
    hint: str = ""

    def describe(self) -> str:
        """The range in words: ``> 0``, ``>= 1``, ``in [0, 1]``, ``in (0, 10]``, ``any`` (no bound)."""
        low = (f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}") if self.has_low else None
        high = (f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})") if self.has_high else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return f">= {_num(self.ge)}" if self.ge is not None else f"> {_num(self.gt)}"
        if high:
            return f"<= {_num(self.le)}" if self.le is not None else f"< {_num(self.lt)}"
        return "any"

    @property
    def has_low(self) -> bool:
        return self.ge is not None or self.gt is not None

    @property
    def has_high(self) -> bool:
        return self.le is not None or self.lt is not None

    def admits(self, v: float) -> bool:
        """Whether the number ``v`` lies in the range (NaN never does)."""
        if v != v:
            return False
        return not (
            (self.ge is not None and v < self.ge)
            or (self.gt is not None and v <= self.gt)
            or (self.le is not None and v > self.le)
            or (self.lt is not None and v >= self.lt)
        )


@dataclasses.dataclass(frozen=True)
class StepValued:
    """Marks an integer field as a training-step quantity: ``kind`` is ``point`` (a step number: "from step N",
    "until step N"), ``duration`` (a number of steps: "every N steps") or ``count`` (a number of steps that is no
    position in the run, e.g. "this many failed steps in a row": tools that rescale a run leave it alone)."""

    kind: str


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


PositiveInt = Annotated[int, Bounds(ge=1)]
"""An integer >= 1 (a size, a count, a width)."""
NonNegativeInt = Annotated[int, Bounds(ge=0)]
"""An integer >= 0."""
PositiveFloat = Annotated[float, Bounds(gt=0)]
"""A finite number > 0."""
NonNegativeFloat = Annotated[float, Bounds(ge=0)]
"""A finite number >= 0."""
Probability = Annotated[float, Bounds(ge=0, le=1)]
"""A number in [0, 1]."""
MAX_IMAGE_SIDE = 8192
"""The largest image side a config may ask for (one 8192x8192 float image batch is already 800 MB per channel)."""
ImageSide = Annotated[int, Bounds(ge=1, le=MAX_IMAGE_SIDE)]
"""An image height or width in pixels, 1 to MAX_IMAGE_SIDE."""
Step = Annotated[int, Bounds(ge=0), StepValued("point")]
"""A training step number ("from step N", "until step N"), >= 0."""
Steps = Annotated[int, Bounds(ge=1), StepValued("duration")]
"""A number of training steps ("every N steps"), >= 1."""


def bounds_of(tp: Any) -> List[Bounds]:
    """The :class:`Bounds` an ``Annotated`` type carries (empty for any other type)."""
    if typing.get_origin(tp) is not Annotated:
        return []
    return [m for m in tp.__metadata__ if isinstance(m, Bounds)]


def step_kind(tp: Any) -> Optional[str]:
    """``point`` or ``duration`` for a type declared ``Step``/``Steps`` (also inside Optional/List/Union), else None."""
    if typing.get_origin(tp) is Annotated:
        for m in tp.__metadata__:
            if isinstance(m, StepValued):
                return m.kind
        return step_kind(typing.get_args(tp)[0])
    for arg in typing.get_args(tp):
        kind = step_kind(arg)
        if kind is not None:
            return kind
    return None


def config_key(prefix: str, name: Any) -> str:
    """The full dotted key of ``name`` under ``prefix`` (``system.geometry`` + ``radius``): the one way keys are made."""
    return f"{prefix}.{name}" if prefix else str(name)


def config_error(key: str, message: str) -> "ConfigError":
    """The one-line error of a config value: ``config error: <full dotted key>: <message>``."""
    return ConfigError(f"config error: {key}: {message}")


class BoundsError(ConfigError):
    """A value of the right type outside its declared range (or not finite)."""


class _Ctx:
    """Where a value came from, for error messages."""

    def __init__(self, source: Union[None, str, Callable[[str], Optional[str]]]):
        self.source = source

    def error(self, key: str, message: str, cls: type = ConfigError) -> ConfigError:
        source = self.source(key) if callable(self.source) else self.source
        where = f" (in {source})" if source else ""
        return cls(f"config error: {key}: {message}{where}")


def _type_name(tp: Any) -> str:
    """A type in words, bounds included: ``int >= 1``, ``list of float in [0, 1]``, ``Schedule or null``."""
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        base = _type_name(args[0])
        words = [b.describe() for b in bounds_of(tp) if b.describe() != "any"]
        if any(b.allow_inf for b in bounds_of(tp)):
            words.append("(inf allowed)")
        kind = step_kind(tp)
        if kind is not None:
            words.append({"point": "(a step number)", "duration": "(a number of steps)"}.get(kind, "(a count of steps)"))
        return " ".join([base, *words])
    if origin is Union:
        return " or ".join(_type_name(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, List):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin in (tuple, Tuple):
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return "[" + ", ".join(_type_name(a) for a in args) + "]" if args else "list"
    if origin in (dict, Dict):
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}" if args else "mapping"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _check_bounds(value: Any, bounds: List[Bounds], key: str, ctx: _Ctx) -> None:
    """Check every number of an already converted ``value`` against ``bounds`` (see the module docstring)."""
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, (int, float)):
        for b in bounds:
            if not b.admits(value):
                what = "an integer" if isinstance(value, int) else "a number"
                fix = b.hint or f"set {what} {b.describe()}"
                raise ctx.error(key, f"must be {b.describe()}, got {value!r}; {fix}", BoundsError)
    elif isinstance(value, Schedule):
        for step, v in value.points:
            for b in bounds:
                if not b.admits(v):
                    fix = b.hint or f"every value of the schedule must be {b.describe()}"
                    raise ctx.error(
                        key, f"the schedule's value at step {step} is {v!r}, must be {b.describe()}; {fix}", BoundsError
                    )
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_bounds(v, bounds, f"{key}[{i}]", ctx)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_bounds(v, bounds, config_key(key, k), ctx)


def _check(value: Any, tp: Any, key: str, ctx: _Ctx, allow_inf: bool = False) -> Any:
    """Return ``value`` converted to ``tp`` or raise a ConfigError naming ``key``.

    Floats must be finite unless ``allow_inf`` (set by ``Bounds(allow_inf=True)`` on an enclosing ``Annotated``).
    """
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if origin is Annotated:
        bounds = bounds_of(tp)
        converted = _check(value, args[0], key, ctx, allow_inf or any(b.allow_inf for b in bounds))
        _check_bounds(converted, bounds, key, ctx)
        return converted
    if origin is Union:
        if value is None:
            if type(None) in args:
                return None
            raise ctx.error(key, f"must not be null; expected {_type_name(tp)}")
        out_of_range = None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(value, arg, key, ctx, allow_inf)
            except BoundsError as e:  # the right type, out of range: that is the message to show
                out_of_range = out_of_range or e
            except ConfigError:
                pass
        if out_of_range is not None:
            raise out_of_range
        raise ctx.error(key, f"expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            return value
        raise ctx.error(key, f"expected one of {', '.join(repr(a) for a in args)}, got {value!r}")
    if tp is Schedule:
        try:
            return Schedule.parse(value, key)
        except ConfigError as e:
            raise ctx.error(key, str(e).split(": ", 1)[-1]) from None
    if dataclasses.is_dataclass(tp):
        return parse_structured(tp, value, key, ctx.source)
    if value is None:
        raise ctx.error(key, f"must not be null; expected {_type_name(tp)} (set a value or remove the key)")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ctx.error(key, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ctx.error(key, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
            if value != value:
                raise ctx.error(key, "must be a number, got nan; set a finite number", BoundsError)
            if not allow_inf and math.isinf(value):
                raise ctx.error(key, f"must be a finite number, got {value!r}; set a finite number", BoundsError)
            return value
        raise ctx.error(key, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ctx.error(key, f"expected a string, got {value!r} (quote it in YAML)")
    if origin in (list, List) or tp is list:
        if not isinstance(value, (list, tuple)):
            raise ctx.error(key, f"expected a list, got {value!r}")
        if not args:
            return list(value)
        return [_check(v, args[0], f"{key}[{i}]", ctx, allow_inf) for i, v in enumerate(value)]
    if origin in (tuple, Tuple) or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise ctx.error(key, f"expected a list, got {value!r}")
        if not args:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(v, args[0], f"{key}[{i}]", ctx, allow_inf) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ctx.error(key, f"expected a list of {len(args)} values, got {value!r}")
        return tuple(_check(v, a, f"{key}[{i}]", ctx, allow_inf) for i, (v, a) in enumerate(zip(value, args)))
    if origin in (dict, Dict) or tp is dict:
        if not isinstance(value, dict):
            raise ctx.error(key, f"expected a mapping, got {value!r}")
        if not args:
            return dict(value)
        return {k: _check(v, args[1], config_key(key, k), ctx, allow_inf) for k, v in value.items()}
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ctx.error(key, f"expected {_type_name(tp)}, got {value!r}")


def _closest(name: str, candidates: List[str]) -> str:
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def parse_structured(
    cls: type, data: Any, prefix: str = "", source: Union[None, str, Callable[[str], Optional[str]]] = None
) -> Any:
    """Parse ``data`` (a mapping, an OmegaConf node, None or a ``cls`` instance) into the dataclass ``cls``.

    ``prefix`` is the dotted key of ``data`` in the whole config; ``source`` names where a key came from (a YAML
    file, or a function of the dotted key), for messages.
    """
    from framework import registry  # local: registry imports errors only, config imports registry lazily

    ctx = _Ctx(source)
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(data, DictConfig):
            data = OmegaConf.to_container(data, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a requirement
        pass
    where = prefix or "(top level)"
    if not isinstance(data, dict):
        raise ctx.error(where, f"expected a mapping of {cls.__qualname__} keys, got {data!r}")

    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        raise ctx.error(
            config_key(prefix, k),
            f"unknown key{_closest(str(k), list(fields))}; remove it or fix the spelling "
            f"(valid keys: {', '.join(sorted(fields))})",
        )
    values: Dict[str, Any] = {}
    for name, f in fields.items():
        key = config_key(prefix, name)
        if name in data:
            raw = data[name]
        elif f.default is not MISSING:
            raw = f.default
        elif f.default_factory is not MISSING:  # type: ignore[misc]
            raw = f.default_factory()  # type: ignore[misc]
        else:
            raise ctx.error(key, f"missing required value; add '{name}: <{_type_name(hints[name])}>' to the config")
        values[name] = _check(raw, hints[name], key, ctx)

    # Resolve `X_type` + `X` pairs: the type names a registered module whose Config parses X.
    for name, kind in registry.TYPE_KEYS.items():
        sub = name[: -len("_type")]
        if name in fields and sub in fields and values[name]:
            module_cls = registry.find(kind, values[name], key=config_key(prefix, name))
            module_cfg_cls = getattr(module_cls, "Config", None)
            if module_cfg_cls is not None and dataclasses.is_dataclass(module_cfg_cls):
                values[sub] = parse_structured(module_cfg_cls, values[sub], config_key(prefix, sub), source)
    return cls(**values)




def field_docs(cls: type) -> Dict[str, str]:
    """The docstring written under each field of a Config dataclass (and its bases), read from the source."""
    docs: Dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:] + [None]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if (
                    isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)
                ):
                    docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def describe(cls: type) -> str:
    """Human-readable list of a Config's fields: name, type (with its bounds), default and docstring (the CLI help)."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls, include_extras=True)
    lines = []
    for f in dataclasses.fields(cls):
        if f.default is not MISSING:
            default = repr(f.default)
        elif f.default_factory is not MISSING:  # type: ignore[misc]
            default = repr(f.default_factory())  # type: ignore[misc]
        else:
            default = "(required)"
        lines.append(f"  {f.name}: {_type_name(hints[f.name])} = {default}\n      {docs.get(f.name, '')}")
    return "\n".join(lines)


def iter_fields(config: Any, prefix: str = "") -> Iterator[Tuple[str, Any, Any]]:
    """Every field of a parsed config tree, depth first: ``(full dotted key, value, declared type)``.

    Nested dataclasses (declared, or a module's Config under an ``X_type`` + ``X`` pair) are entered and also yielded;
    so are dataclasses inside lists. Used to find fields by their declared type (e.g. every ``Step``).
    """
    if not dataclasses.is_dataclass(config):
        return
    hints = typing.get_type_hints(type(config), include_extras=True)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        key = config_key(prefix, f.name)
        yield key, value, hints.get(f.name, Any)
        if dataclasses.is_dataclass(value):
            yield from iter_fields(value, key)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                yield from iter_fields(v, f"{key}[{i}]")
