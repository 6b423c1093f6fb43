"""Strict, typed parsing of OmegaConf configs into nested ``Config`` dataclasses.

Every module declares ``@dataclass class Config`` with a one-line docstring under each field. ``parse_structured``
turns a plain mapping into that dataclass and fails on the first problem with one line that names the full dotted key
(``system.guidance.guidance_scal``), the file it came from and the fix: an unknown key (with the closest valid
name), a value of the wrong type, a missing required value. A field ``X_type`` beside a field ``X`` names a registered
module of kind ``X`` (see ``framework.registry.TYPE_KEYS``): the parser resolves it and parses ``X`` with that module's
Config, so a whole experiment is validated before anything heavy is built.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import textwrap
import typing
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from framework.errors import ConfigError
from framework.schedule import Schedule

MISSING = dataclasses.MISSING


class _Ctx:
    """Where a value came from, for error messages."""

    def __init__(self, source: Union[None, str, Callable[[str], Optional[str]]]):
        self.source = source

    def error(self, key: str, message: str) -> ConfigError:
        source = self.source(key) if callable(self.source) else self.source
        where = f" (in {source})" if source else ""
        return ConfigError(f"config error: {key}: {message}{where}")


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _check(value: Any, tp: Any, key: str, ctx: _Ctx) -> Any:
    """Return ``value`` converted to ``tp`` or raise a ConfigError naming ``key``."""
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if origin is Union:
        if value is None:
            if type(None) in args:
                return None
            raise ctx.error(key, f"must not be null; expected {_type_name(tp)}")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(value, arg, key, ctx)
            except ConfigError as e:
                errors.append(str(e))
        raise ctx.error(key, f"expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value in args:
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
            return float(value)
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
        return [_check(v, args[0], f"{key}[{i}]", ctx) for i, v in enumerate(value)]
    if origin in (tuple, Tuple) or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise ctx.error(key, f"expected a list, got {value!r}")
        if not args:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(v, args[0], f"{key}[{i}]", ctx) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ctx.error(key, f"expected a list of {len(args)} values, got {value!r}")
        return tuple(_check(v, a, f"{key}[{i}]", ctx) for i, (v, a) in enumerate(zip(value, args)))
    if origin in (dict, Dict) or tp is dict:
        if not isinstance(value, dict):
            raise ctx.error(key, f"expected a mapping, got {value!r}")
        if not args:
            return dict(value)
        return {k: _check(v, args[1], f"{key}.{k}", ctx) for k, v in value.items()}
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

    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        raise ctx.error(
            _join(prefix, k),
            f"unknown key{_closest(str(k), list(fields))}; remove it or fix the spelling "
            f"(valid keys: {', '.join(sorted(fields))})",
        )
    values: Dict[str, Any] = {}
    for name, f in fields.items():
        key = _join(prefix, name)
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
            module_cls = registry.find(kind, values[name], key=_join(prefix, name))
            module_cfg_cls = getattr(module_cls, "Config", None)
            if module_cfg_cls is not None and dataclasses.is_dataclass(module_cfg_cls):
                values[sub] = parse_structured(module_cfg_cls, values[sub], _join(prefix, sub), source)
    return cls(**values)


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


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
    """Human-readable list of a Config's fields: name, type, default and docstring (the CLI help)."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
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
