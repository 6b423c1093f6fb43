"""``BaseSystem``: the Lightning module every system derives from.

It owns what all systems share, written once: building modules from the registry in one place, the loss
bookkeeping (``loss_<x>`` weighted by the schedule ``lambda_<x>``, checked at the first step), one optimizer with
parameter groups, explicit per-step updates of its children, exact resume (randomness derived from the step),
steps skipped when a loss or gradient is NaN/Inf (``systems/fault_tolerance.py``), checkpoints with finite trainable
state only, and the validation / test / export outputs (image grids, an orbit video, exported files).

A system implements ``configure`` (build modules with ``self.build``), ``training_losses(batch)`` (a dict whose
``loss_*`` entries are weighted and summed; other scalar entries are logged), ``validation_panels(batch)`` (the
panels of one grid), and optionally ``test_panels`` and ``export_outputs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Dict, List, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch

from framework import registry
from framework.config import Bounds, StepValued
from framework.errors import ConfigError
from framework.module import Configurable
from framework.schedule import Schedule
from framework.utils.checkpoint import check_finite, check_system, load_checkpoint, load_state_into, state_dict_of
from framework.utils.saving import Panel, Saver
from framework.utils.seeding import derived_seed, seed_all
from systems.fault_tolerance import NonFiniteGuard, check_savable
from systems.loggers import LoggersConfig
from systems.optim import OptimizerConfig, SchedulerConfig, build_optimizer, build_scheduler


class BaseSystem(Configurable, pl.LightningModule):
    @dataclass
    class Config:
        loss: Dict[str, Schedule] = field(default_factory=dict)
        """Loss weights ``lambda_<x>`` (numbers or schedules), one for each ``loss_<x>`` the system returns."""
        optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
        """The one optimizer and its parameter groups."""
        scheduler: Optional[SchedulerConfig] = None
        """An optional learning-rate scheduler."""
        weights: Optional[str] = None
        """A checkpoint whose system weights initialise this run (not a resume: step and optimizer start afresh)."""
        weights_ignore_modules: Optional[List[str]] = None
        """Module paths whose weights are not taken from ``weights``."""
        exporter_type: str = ""
        """Registered exporter used by ``--export`` (e.g. ``mesh-exporter``); empty: the system has none."""
        exporter: Any = field(default_factory=dict)
        """Config of the exporter."""
        loggers: LoggersConfig = field(default_factory=LoggersConfig)
        """Experiment loggers besides TensorBoard and CSV (threestudio's ``wandb`` block; see systems/loggers.py)."""
        max_nonfinite_steps: Annotated[
            int, Bounds(ge=1, hint="set at least 1 (the skipped steps in a row that stop the run)"), StepValued("count")
        ] = 5
        """A step with a NaN/Inf loss or gradient is skipped (no update, still counted); this many in a row stop."""

    cfg: Any

    def __init__(self, cfg: Any = None, seed: int = 0):
        pl.LightningModule.__init__(self)
        self._parse(cfg, "system")
        self.seed = seed
        self.nonfinite = NonFiniteGuard(self.cfg.max_nonfinite_steps)
        self._stepped: List[Any] = []
        self._save_dir: Optional[Path] = None
        self.saver = Saver(None)
        self._loaded_step = 0
        self.resume_hyperparameters: List[Dict[str, Any]] = []  # set by systems.preflight.check_resume
        self._losses_checked: Optional[frozenset] = None  # the loss names checked against the weights
        self.configure()
        if self.cfg.weights:
            self.load_weights(self.cfg.weights, self.cfg.weights_ignore_modules)

    # ------------------------------------------------------------------ building
    def configure(self) -> None:
        """Build the system's modules (with ``self.build``)."""

    def build(self, kind: str, type_name: str, cfg: Any, field: Optional[str] = None, **kwargs: Any) -> Any:
        """Construct a registered module and add it to the modules updated before every step (in build order).

        ``field`` is the system's config field holding the module's config (default: ``kind``, e.g. ``geometry``);
        the module's keys are then ``system.<field>.*`` in every message (``Configurable.key``).
        """
        field = field or kind
        if "." in field:
            raise ValueError(f"build(): give the config field name (e.g. 'geometry'), not the dotted key '{field}'")
        module = registry.find(kind, type_name, key=self.key(f"{field}_type"))(cfg, prefix=self.key(field), **kwargs)
        self._stepped.append(module)
        return module

    def set_save_dir(self, save_dir: Optional[Path]) -> None:
        """Where ``save/`` outputs go; the launcher sets it, rank 0 alone writes."""
        self._save_dir = Path(save_dir) if save_dir is not None else None
        self.saver = Saver(self._save_dir, enabled=True)

    def setup(self, stage: str) -> None:
        enabled = self.trainer.is_global_zero if self._trainer is not None else True
        self.saver = Saver(self._save_dir, enabled=enabled)

    # ------------------------------------------------------------------ steps and schedules
    @property
    def current_step(self) -> int:
        """The global step: the trainer's while fitting, the checkpoint's when testing or exporting from one."""
        step = self.trainer.global_step if self._trainer is not None else 0
        return max(int(step), int(self._loaded_step))

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        """Explicitly update every built module (and the data module) for ``global_step``."""
        for module in self._stepped:
            module.update_step(epoch, global_step, on_load_weights=on_load_weights)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        step = self.global_step
        # Randomness of a step depends on (seed, rank, step) alone: resumed runs repeat uninterrupted ones exactly.
        seed_all(derived_seed(self.seed, self.global_rank, step, 0x5EED))
        self.update_step(self.current_epoch, step)

    def _on_eval_start(self) -> None:
        if not (self._trainer is not None and self.trainer.state.fn == "fit"):
            self.update_step(0, self.current_step, on_load_weights=True)
        seed_all(derived_seed(self.seed, self.global_rank, self.current_step, 0xE7A1))

    def on_validation_start(self) -> None:
        self._on_eval_start()

    def on_train_start(self) -> None:
        """Apply the optimizer hyperparameters the config changed since the resumed checkpoint (after Lightning has
        restored the optimizer's state from it), so that the run follows its config (see ``check_resume``)."""
        for optimizer in self.trainer.optimizers[:1]:
            for group, changes in zip(optimizer.param_groups, self.resume_hyperparameters):
                group.update(changes)
        self.resume_hyperparameters = []

    def on_test_start(self) -> None:
        self._on_eval_start()

    # ------------------------------------------------------------------ losses
    def training_losses(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        raise NotImplementedError

    def loss_enabled(self, name: str) -> bool:
        """Whether ``lambda_<name>`` is configured and not zero at every step: compute ``loss_<name>`` only then."""
        sched = self.cfg.loss.get(f"lambda_{name}")
        return sched is not None and not (sched.is_constant and sched(0) == 0.0)

    def _check_losses(self, names: Sequence[str]) -> None:
        """Match the returned ``loss_<x>`` with the weights ``lambda_<x>``; check that some weight is non-zero at every
        step of the run. At the first step, and again whenever the set of returned losses changes, so that no
        mismatch can surface as a crash hours into a run."""
        weights = {k[len("lambda_") :] for k in self.cfg.loss if k.startswith("lambda_")}
        bad_keys = [k for k in self.cfg.loss if not k.startswith("lambda_")]
        if bad_keys:
            raise self.config_error(f"loss.{bad_keys[0]}", "loss weights are named lambda_<loss>")
        unweighted = sorted(set(names) - weights)
        if unweighted:
            raise self.config_error(
                "loss",
                f"the system returns loss_{unweighted[0]} but the config has no lambda_{unweighted[0]}; add "
                f"{self.key('loss')}.lambda_{unweighted[0]} (0 to disable)",
            )
        orphans = sorted(n for n in weights - set(names) if self.loss_enabled(n))
        if orphans:
            raise self.config_error(
                f"loss.lambda_{orphans[0]}",
                f"no loss_{orphans[0]} is computed by {type(self).__name__}; remove the weight or fix its name "
                f"(losses it returns: {', '.join(sorted(names))})",
            )
        if self._losses_checked is None:
            self._check_some_weight_nonzero(names)
        self._losses_checked = frozenset(names)

    def _check_some_weight_nonzero(self, names: Sequence[str]) -> None:
        """Fail now if at some step of the run every weight of the returned losses is zero (nothing would train)."""
        schedules = [self.cfg.loss[f"lambda_{n}"] for n in names]
        max_steps = int(getattr(self.trainer, "max_steps", -1) or -1) if self._trainer is not None else -1
        points = sorted({0, *(s for sched in schedules for s, _ in sched.points)})
        if max_steps > 0:
            points = [p for p in points if p < max_steps] + [max_steps - 1]
        candidates = sorted(set(points) | {(a + b) // 2 for a, b in zip(points, points[1:])})
        for step in candidates:
            if step >= self.global_step and all(sched(step) == 0.0 for sched in schedules):
                raise self.config_error(
                    "loss",
                    f"every loss weight is zero at step {step} (losses: {', '.join(sorted(names))}); nothing would "
                    "train from there; make one lambda_<x> non-zero at that step",
                )

    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.training_losses(batch)
        losses = {k[len("loss_") :]: v for k, v in out.items() if k.startswith("loss_")}
        if self._losses_checked != frozenset(losses):
            self._check_losses(list(losses))
        step = self.global_step
        total: Any = 0.0
        weighted = {}
        for name, value in losses.items():
            weight = self.cfg.loss[f"lambda_{name}"](step)
            # The logging arguments of a key must stay the same for the whole run (Lightning refuses a change with
            # MisconfigurationException): they depend on the config only, never on the step's weight.
            self.log(f"train/loss_{name}", value.detach(), prog_bar=self.loss_enabled(name))
            self.log(f"train/lambda_{name}", weight)
            if weight != 0.0:
                total = total + weight * value
                weighted[name] = value
        self.nonfinite.note_losses(weighted)
        self._log_measurements(out)
        if not torch.is_tensor(total):
            raise self.config_error("loss", "every loss weight is zero at this step; nothing to train")
        self.log("train/loss", total.detach(), prog_bar=True)
        return total

    def progress_bar_keys(self) -> Sequence[str]:
        """Non-loss outputs of ``training_losses`` shown on the progress bar (fixed per key, as Lightning needs)."""
        return ()

    def sparse_keys(self) -> Sequence[str]:
        """Prefixes of non-loss outputs present only at some steps (diagnostics measured every N steps)."""
        return ()

    def _log_measurements(self, out: Dict[str, Any]) -> None:
        """Log the non-loss scalar outputs of a step as ``train/<key>``.

        Outputs present at every step go through ``self.log``. Sparse ones (:meth:`sparse_keys`) go straight to the
        loggers at the steps they exist: Lightning would repeat a ``self.log`` value at every later logged step of the
        epoch; on the progress bar they show the last measurement. Lightning's arguments stay fixed per key.
        """
        shown, sparse = self.progress_bar_keys(), tuple(self.sparse_keys())
        direct = {}
        for key, value in out.items():
            if key.startswith("loss_") or not _is_scalar(value):
                continue
            value = value.detach() if torch.is_tensor(value) else float(value)
            if sparse and key.startswith(sparse):
                direct[f"train/{key}"] = float(value)
                if key in shown:
                    self.log(f"train/{key}", value, prog_bar=True, logger=False)
            else:
                self.log(f"train/{key}", value, prog_bar=key in shown)
        if direct and self._trainer is not None:
            for logger in self.loggers:
                logger.log_metrics(direct, step=int(self.global_step))

    # ------------------------------------------------------------------ optimizer
    def configure_optimizers(self) -> Any:
        try:  # torch checks argument values (lr >= 0, betas in [0, 1)) with ValueError
            optimizer = build_optimizer(self, self.cfg.optimizer)
        except ValueError as e:
            raise self.config_error("optimizer.args", str(e)) from None
        try:
            scheduler = build_scheduler(optimizer, self.cfg.scheduler, self.key("scheduler"))
        except ValueError as e:
            raise self.config_error("scheduler.args", str(e)) from None
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """Step, or skip a step whose loss or gradient is NaN/Inf (see systems/fault_tolerance.py)."""
        self.nonfinite.optimizer_step(self, optimizer, optimizer_closure)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        check_savable(checkpoint, int(self.global_step))
        checkpoint["fault_tolerance"] = {"nonfinite_streak": self.nonfinite.streak}
        checkpoint["framework"] = {
            "system_type": getattr(type(self), "registered_name", type(self).__name__),
            "global_step": int(self.global_step),
        }

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        check_system(checkpoint, getattr(type(self), "registered_name", type(self).__name__), "(checkpoint)")
        self._loaded_step = int(checkpoint.get("global_step", 0))
        self.nonfinite.streak = int((checkpoint.get("fault_tolerance") or {}).get("nonfinite_streak", 0))

    def load_weights(self, path: str, ignore_modules: Optional[List[str]] = None) -> int:
        """Load the system weights of a checkpoint (no optimizer state); returns the checkpoint's step."""
        data = load_checkpoint(path, "system.weights")
        check_system(data, getattr(type(self), "registered_name", type(self).__name__), path)
        state = state_dict_of(data, path)
        check_finite(state, path, "system.weights")
        load_state_into(self, state, path, ignore_modules)
        return int(data.get("global_step", 0))

    def load_for_eval(self, path: str) -> None:
        """Load a checkpoint for ``--export``: weights and the step its names and schedules use."""
        self._loaded_step = self.load_weights(path)
        self.update_step(0, self._loaded_step, on_load_weights=True)

    # ------------------------------------------------------------------ validation, test, export
    def validation_panels(self, batch: Dict[str, Any]) -> List[Panel]:
        raise NotImplementedError

    def test_panels(self, batch: Dict[str, Any]) -> List[Panel]:
        return self.validation_panels(batch)

    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        img = self.saver.save_grid(f"it{self.current_step}-val/{batch_idx:04d}.png", self.validation_panels(batch))
        if batch_idx == 0 and self.saver.enabled:
            self._log_image("val", img)

    def test_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        self.saver.save_grid(f"it{self.current_step}-test/{batch_idx:04d}.png", self.test_panels(batch))

    def on_test_epoch_end(self) -> None:
        if self.saver.enabled:
            frames = sorted(self.saver.path(f"it{self.current_step}-test").glob("*.png"))
            self.saver.save_images_as_video(f"it{self.current_step}-test.mp4", frames, fps=30)

    def _log_image(self, tag: str, img: Optional[np.ndarray]) -> None:
        if img is None:
            return
        for logger in self.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image(f"{tag}/grid", img, self.current_step, dataformats="HWC")

    def make_exporter(self) -> Any:
        """The configured exporter (``system.exporter_type``)."""
        if not self.cfg.exporter_type:
            raise self.config_error(
                "exporter_type",
                f"{type(self).__name__} has no exporter configured; set {self.key('exporter_type')} "
                f"(registered: {', '.join(registry.names('exporter')) or 'none'})",
            )
        return registry.find("exporter", self.cfg.exporter_type, key=self.key("exporter_type"))(
            self.cfg.exporter, prefix=self.key("exporter")
        )

    def export_outputs(self) -> List[Any]:
        """What ``--export`` writes (``ExportOutput`` files); a system feeds its parts to ``make_exporter()``."""
        raise ConfigError(f"--export: {type(self).__name__} defines nothing to export")

    def export(self) -> List[Path]:
        """Run the exporter and write its outputs under ``save/it<step>-export/``."""
        written = []
        folder = f"it{self.current_step}-export"
        for out in self.export_outputs():
            if self.saver.save_dir is not None:
                root = (self.saver.save_dir / folder).resolve()
                if not (root / out.filename).resolve().is_relative_to(root):
                    raise self.config_error(
                        "exporter",
                        f"the export file name '{out.filename}' leaves the export folder {root}; use a plain name "
                        "(e.g. save_name: model)",
                    )
            path = self.saver.path(f"{folder}/{out.filename}")
            out.write(path)
            written.append(path)
        return written


def _is_scalar(value: Any) -> bool:
    if torch.is_tensor(value):
        return value.numel() == 1
    return isinstance(value, (int, float)) and not isinstance(value, bool)
