"""Base classes of every registered module: a nested ``Config`` parsed strictly, ``configure`` and ``update_step``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from framework.config import config_error, config_key, parse_structured
from framework.errors import ConfigError


class Configurable:
    """Mixin: ``self.cfg`` is the module's ``Config`` parsed from a mapping (or given as an instance)."""

    @dataclass
    class Config:
        pass

    cfg: Any

    def _parse(self, cfg: Any, prefix: str = "") -> None:
        self._prefix = prefix
        self.cfg = parse_structured(self.Config, cfg, prefix)

    def key(self, field: str) -> str:
        """The full dotted config key of one of this module's fields (``system.guidance.guidance_scale``), for errors.

        The one way a module names its keys: the prefix is the module's place in the whole config, given by whoever
        builds it (``system.geometry``), never typed inside the module.
        """
        return config_key(getattr(self, "_prefix", ""), field)

    def config_error(self, field: str, message: str) -> ConfigError:
        """The one-line error of one of this module's fields: ``config error: <full dotted key>: <message>``."""
        return config_error(self.key(field), message)

    def configure(self) -> None:
        """Build sub-modules and buffers from ``self.cfg``; called once by the constructor."""

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        """Called by the owning system before every training step (and after loading weights)."""


class BaseModule(Configurable, nn.Module):
    """A registered ``nn.Module``: geometry, material, background, renderer, guidance."""

    def __init__(self, cfg: Any = None, prefix: str = "", **kwargs: Any):
        nn.Module.__init__(self)
        self._parse(cfg, prefix)
        self.configure(**kwargs)

    def configure(self, **kwargs: Any) -> None:  # type: ignore[override]
        """Build sub-modules from ``self.cfg``; extra keyword arguments are other modules this one needs."""


class BaseObject(Configurable):
    """A registered object that holds no trainable state (prompt processors, exporters)."""

    def __init__(self, cfg: Any = None, prefix: str = "", **kwargs: Any):
        self._parse(cfg, prefix)
        self.configure(**kwargs)

    def configure(self, **kwargs: Any) -> None:  # type: ignore[override]
        """Build state from ``self.cfg``."""

