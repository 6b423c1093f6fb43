"""``system.loggers``: threestudio's extra experiment loggers, beside the TensorBoard and CSV logs every run keeps.

threestudio's configs all carry a ``loggers.wandb`` block; it means here what it means there: with ``enable: true``
the run also logs to Weights & Biases through Lightning's ``WandbLogger(project=..., name=...)`` (its local files
under the trial folder); with ``enable: false`` the block is accepted and does nothing. A run that enables it on a
machine without the ``wandb`` package stops before anything is written, with one line.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from framework.config import config_error


@dataclass
class WandbConfig:
    """``system.loggers.wandb``: threestudio's keys."""

    enable: bool = False
    """Also log to Weights & Biases (needs the package ``wandb``)."""
    project: str = "threestudio"
    """The W&B project."""
    name: Optional[str] = None
    """The W&B run name, passed as given (threestudio's configs write the string ``None``); null: W&B picks one."""


@dataclass
class LoggersConfig:
    """``system.loggers``: experiment loggers added to the TensorBoard and CSV logs."""

    wandb: WandbConfig = field(default_factory=WandbConfig)
    """Weights & Biases."""


def wandb_available() -> bool:
    """Whether the ``wandb`` package can be imported (looked up, not imported: importing it is slow)."""
    return importlib.util.find_spec("wandb") is not None


def check_loggers(cfg: LoggersConfig, key: str = "system.loggers") -> None:
    """Fail with one line when an enabled logger cannot work here (before the trial folder is made)."""
    if cfg.wandb.enable and not wandb_available():
        raise config_error(
            f"{key}.wandb.enable",
            "is true but the package wandb is not installed; install it (pip install wandb) or set "
            f"{key}.wandb.enable=false",
        )


def extra_loggers(cfg: LoggersConfig, trial: Path, key: str = "system.loggers") -> List[Any]:
    """The Lightning loggers ``cfg`` enables, writing their local files inside ``trial``."""
    check_loggers(cfg, key)
    loggers: List[Any] = []
    if cfg.wandb.enable:
        from pytorch_lightning.loggers import WandbLogger

        loggers.append(WandbLogger(project=cfg.wandb.project, name=cfg.wandb.name, save_dir=str(trial)))
    return loggers
