"""The one registry of buildable modules.

Every module that a config can name (``geometry_type: implicit-volume``) is registered here under a *kind* and a
name. Kinds are fixed; names follow threestudio where a module exists in both.

    @registry.register("geometry", "implicit-volume")
    class ImplicitVolume(BaseModule): ...

    cls = registry.find("geometry", "implicit-volume")
"""

from __future__ import annotations

from typing import Callable, Dict, List, TypeVar

from framework.errors import ConfigError

KINDS = (
    "system",
    "data",
    "geometry",
    "material",
    "background",
    "renderer",
    "guidance",
    "prompt_processor",
    "exporter",
)

_REGISTRY: Dict[str, Dict[str, type]] = {kind: {} for kind in KINDS}

T = TypeVar("T", bound=type)


def _check_kind(kind: str) -> None:
    if kind not in _REGISTRY:
        raise ValueError(f"unknown registry kind '{kind}'; kinds are: {', '.join(KINDS)}")


def register(kind: str, name: str) -> Callable[[T], T]:
    """Class decorator: register ``cls`` as ``name`` of ``kind``. A name can be registered once per kind."""
    _check_kind(kind)

    def decorator(cls: T) -> T:
        existing = _REGISTRY[kind].get(name)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"{kind} '{name}' is registered twice: by {existing.__module__}.{existing.__qualname__} "
                f"and by {cls.__module__}.{cls.__qualname__}; rename one of them"
            )
        _REGISTRY[kind][name] = cls
        cls.registered_name = name  # type: ignore[attr-defined]
        cls.registered_kind = kind  # type: ignore[attr-defined]
        return cls

    return decorator


def names(kind: str) -> List[str]:
    """Sorted registered names of ``kind``."""
    _check_kind(kind)
    return sorted(_REGISTRY[kind])


def find(kind: str, name: str, key: str | None = None) -> type:
    """The class registered as ``name`` of ``kind``; an unknown name raises ConfigError listing the valid ones."""
    _check_kind(kind)
    try:
        return _REGISTRY[kind][name]
    except (KeyError, TypeError):
        where = f"{key}: " if key else ""
        valid = ", ".join(names(kind)) or "(none registered)"
        raise ConfigError(f"{where}unknown {kind} type '{name}'; registered {kind} types: {valid}") from None


# The config keys that name a module, and the kind each names: ``geometry_type`` + ``geometry``.
TYPE_KEYS = {f"{kind}_type": kind for kind in KINDS}
