"""Fault tolerance of a training run: SIGINT/SIGTERM, non-finite losses and gradients, finite checkpoints.

Checks made before a run starts (resume files, the output folder, Lightning arguments) are in ``systems/preflight.py``.

Semantics, stated once (docs/bad-inputs.md repeats them for users):

* **SIGINT / SIGTERM while training** (:class:`InterruptCheckpoint`). From the first training step on, both signals
  only set a flag; the step in progress finishes (forward, backward, optimizer step), then the run saves
  ``<trial>/ckpts/interrupted-step=<N>.ckpt`` and ``last.ckpt`` (N is the number of steps done, the checkpoint's
  ``global_step``), says where on stderr, skips ``--test`` and exits with status 128 + the signal number (130 for
  SIGINT, 143 for SIGTERM: "stopped by a signal, resumable"). Nothing is ever saved in the middle of a step, so
  ``resume=`` from that file continues at step N with the batch and the random state of step N (both derive from
  ``(seed, rank, step)``) and the finished run equals an uninterrupted one. A second signal while the first is
  pending stops at once without saving (Lightning's KeyboardInterrupt shutdown, status 1); a signal during the save
  itself is ignored, so no half-written checkpoint is left. Lightning 2.6 installs its own SIGTERM handler when a
  fit starts (it raises ``SIGTERMException`` at the next batch boundary and saves nothing); this callback replaces it
  at ``on_train_start`` (taking over a SIGTERM Lightning caught during set-up), and Lightning restores the previous
  handlers when the fit ends. In multi-process runs the decision to stop is reduced over the processes every step,
  so all of them stop after the same step.
* **Non-finite values** (:class:`NonFiniteGuard`, run by ``BaseSystem.optimizer_step``). After the backward pass the
  step is checked: a NaN/Inf in a weighted ``loss_<x>`` (weight not zero) or in a gradient skips the optimizer step,
  so parameters and optimizer state (Adam moments and step count) stay as they were, with a warning naming the loss
  or the parameter group. **A skipped step still counts as a step**: Lightning 2.6 advances ``global_step`` after the
  ``optimizer_step`` hook whether or not the hook called ``optimizer.step()``, so the next step draws batch N+1 and
  the random state of step N+1 (not a repeat of N), loss-weight and learning-rate schedules move on, and a resumed run
  repeats the skips of an uninterrupted one. ``system.max_nonfinite_steps`` skips in a row stop the run with one line
  (exit status 2); the checkpoints already written are kept. Under fp16 mixed precision the gradient check is left to
  the gradient scaler, which skips overflowing steps itself (losses are still checked). The skip decision, too, is
  reduced over the processes of a multi-process run.
* **Checkpoints never hold non-finite weights**: ``BaseSystem.on_save_checkpoint`` refuses (one line) to write one.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint

from framework.errors import CheckpointError, UserError
from framework.utils.checkpoint import atomic_copy, few, nonfinite_tensors

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_status(signum: int) -> int:
    """The exit status of a run stopped by signal ``signum``: the shell's convention, 128 + the signal number."""
    return 128 + int(signum)


class TrainingInterrupted(Exception):
    """Raised at a step boundary after SIGINT/SIGTERM, once the step's checkpoint is written; launch.py reports it."""

    def __init__(self, signum: int, step: int, paths: List[Path]):
        self.signum = int(signum)
        self.step = step
        self.paths = paths
        name = signal.Signals(self.signum).name
        shown = f"{paths[0]} (and {paths[1].name})" if len(paths) > 1 else str(paths[0])
        super().__init__(
            f"interrupted by {name}: saved step {step} to {shown}; continue this run with resume={paths[0]}"
        )

    @property
    def exit_status(self) -> int:
        return exit_status(self.signum)


class NonFiniteTrainingError(UserError):
    """Too many steps in a row with a non-finite loss or gradient."""


class InterruptCheckpoint(Checkpoint):
    """Turns SIGINT/SIGTERM during training into "finish this step, save it, stop" (see the module docstring).

    A ``Checkpoint`` subclass, so that Lightning calls it after ``ModelCheckpoint`` at each step end (a scheduled
    checkpoint of the same step is written first).
    """

    def __init__(self, dirpath: str | Path):
        super().__init__()
        self.dirpath = Path(dirpath)
        self.signum: Optional[int] = None
        self.paths: List[Path] = []
        self._previous: Dict[int, Any] = {}
        self._saving = False

    # ------------------------------------------------------------------ handlers
    def _handler(self, signum: int, frame: Any) -> None:
        if self._saving:
            return
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        # os.write: no buffered I/O inside a signal handler (the main thread may be inside a print).
        os.write(
            2,
            f"\n{signal.Signals(signum).name} received: stopping after the current training step and saving it "
            "(send it again to stop at once, without saving)\n".encode(),
        )

    def install(self) -> None:
        """Install the handlers (main thread only; Python refuses signal handlers elsewhere)."""
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return
        for s in SIGNALS:
            self._previous[s] = signal.getsignal(s)
            signal.signal(s, self._handler)

    def restore(self) -> None:
        """Put back the handlers found by :meth:`install`."""
        if threading.current_thread() is not threading.main_thread():
            return
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    # ------------------------------------------------------------------ Lightning hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After Lightning's own SIGTERM handler (registered when the fit starts): ours replaces it. A SIGTERM that
        # Lightning's handler caught while the fit was being set up is taken over: the first step is saved.
        if trainer.received_sigterm and self.signum is None:
            self.signum = int(signal.SIGTERM)
        self.install()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        stop = trainer.strategy.reduce_boolean_decision(self.signum is not None, all=False)
        if not stop:
            return
        signum = self.signum if self.signum is not None else int(signal.SIGTERM)
        step = int(trainer.global_step)
        path = self.dirpath / f"interrupted-step={step}.ckpt"
        last = self.dirpath / "last.ckpt"
        self._saving = True
        try:
            trainer.save_checkpoint(path, weights_only=False)
            if trainer.is_global_zero:
                atomic_copy(path, last)
            trainer.strategy.barrier("interrupt-checkpoint")
        finally:
            self._saving = False
        self.paths = [path, last]
        raise TrainingInterrupted(signum, step, self.paths)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.restore()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.restore()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.restore()


# ---------------------------------------------------------------------------------------------- non-finite steps
def _kind(value: torch.Tensor) -> str:
    return "NaN" if bool(torch.isnan(value).any()) else "Inf"


class NonFiniteGuard:
    """Checks each step's losses and gradients; skips the optimizer step when one is NaN/Inf.

    ``BaseSystem.training_step`` hands it the weighted losses (:meth:`note_losses`), ``BaseSystem.optimizer_step``
    runs :meth:`optimizer_step` in place of Lightning's default. ``streak`` (skips in a row) is saved in checkpoints
    so that a resumed run stops where an uninterrupted one would.
    """

    def __init__(self, max_in_a_row: int):
        self.max_in_a_row = max_in_a_row
        self.streak = 0
        self.skipped: List[int] = []
        self._losses: List[Dict[str, torch.Tensor]] = []

    def note_losses(self, losses: Dict[str, torch.Tensor]) -> None:
        """The losses that enter this step's total (weight not zero), detached; several under gradient accumulation."""
        self._losses.append({k: v.detach() for k, v in losses.items() if torch.is_tensor(v)})

    def problems(self, system: pl.LightningModule, optimizer: Any, loss: Any) -> List[str]:
        """What is non-finite in this step: the losses by name, else the parameter groups whose gradient is."""
        noted, self._losses = self._losses, []
        named = [(k, v) for d in noted for k, v in d.items()]
        if named:
            ok = torch.stack([torch.isfinite(v).all() for _, v in named]).tolist()
            bad = [f"loss_{k} is {_kind(v)}" for (k, v), good in zip(named, ok) if not good]
            if bad:
                return bad
        if torch.is_tensor(loss) and not bool(torch.isfinite(loss).all()):
            return [f"the weighted total loss is {_kind(loss)}"]
        if getattr(system.trainer.precision_plugin, "scaler", None) is not None:
            return []  # fp16 AMP: the gradient scaler skips steps whose (scaled) gradients overflow
        groups = [
            (group.get("name", f"#{i}"), [p.grad for p in group["params"] if p.grad is not None])
            for i, group in enumerate(optimizer.param_groups)
        ]
        groups = [(name, grads) for name, grads in groups if grads]
        if not groups:
            return []
        ok = torch.stack([torch.stack([torch.isfinite(g).all() for g in grads]).all() for _, grads in groups]).tolist()
        return [
            f"the gradient of parameter group '{name}' has "
            + ("NaN" if any(bool(torch.isnan(g).any()) for g in grads) else "Inf")
            for (name, grads), good in zip(groups, ok)
            if not good
        ]

    def optimizer_step(self, system: pl.LightningModule, optimizer: Any, closure: Any) -> None:
        """Run the closure (training_step, zero_grad, backward), then step the optimizer or skip the step."""
        if isinstance(getattr(optimizer, "optimizer", optimizer), torch.optim.LBFGS):
            self._losses = []
            optimizer.step(closure=closure)  # LBFGS re-evaluates the closure itself: no check
            return
        loss = closure() if closure is not None else None
        reasons = self.problems(system, optimizer, loss)
        trainer = system.trainer
        skip = trainer.strategy.reduce_boolean_decision(bool(reasons), all=False)
        if not skip:
            self.streak = 0
            optimizer.step(closure=lambda: loss)
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        step = int(system.global_step)
        self.streak += 1
        self.skipped.append(step)
        why = ", ".join(reasons) or "a non-finite loss or gradient in another process"
        rank = f" (rank {trainer.global_rank})" if trainer.world_size > 1 else ""
        if self.streak >= self.max_in_a_row:
            last = latest_checkpoint(trainer)
            kept = f"the last checkpoint, {last}, is kept" if last else "no checkpoint had been saved"
            raise NonFiniteTrainingError(
                f"training stopped at step {step}{rank}: {self.streak} steps in a row were skipped for non-finite "
                f"values (last: {why}); {kept}; lower the learning rate or the loss weights, or raise "
                f"system.max_nonfinite_steps (now {self.max_in_a_row})"
            )
        print(
            f"warning: step {step} skipped{rank}, parameters and optimizer state unchanged: {why} "
            f"({self.streak} in a row; {self.max_in_a_row} stop the run)",
            file=sys.stderr,
        )


def latest_checkpoint(trainer: pl.Trainer) -> Optional[Path]:
    """The most recently written ``.ckpt`` of the trainer's checkpoint folders, if any."""
    found: List[Path] = []
    for cb in trainer.checkpoint_callbacks:
        dirpath = getattr(cb, "dirpath", None)
        if dirpath and Path(dirpath).is_dir():
            found.extend(p for p in Path(dirpath).glob("*.ckpt") if p.is_file())
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def check_savable(checkpoint: Dict[str, Any], step: int) -> None:
    """Refuse to save a checkpoint whose weights hold NaN or Inf (one line; the files already saved are kept)."""
    bad = nonfinite_tensors(checkpoint.get("state_dict", {}))
    if bad:
        raise CheckpointError(
            f"refusing to save a checkpoint at step {step}: the weights {few(bad)} hold NaN or Inf; "
            "the checkpoints saved before are kept"
        )
