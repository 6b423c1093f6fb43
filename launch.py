#!/usr/bin/env python
"""Run an experiment: ``python launch.py --config configs/vsd.yaml --train [key=value ...]``.

Exactly one of --train, --validate, --test, --export. Remaining ``key=value`` arguments override the config
(``system.prompt_processor.prompt="a hamburger"``). ``resume=<ckpt>`` continues a run, or names the checkpoint that
--validate/--test/--export use. Errors a user can cause are printed as one line (``--debug`` shows tracebacks).

Exit status: 0 done; 2 an error a user can cause (a bad input, a full disk, a run stopped by NaN/Inf), one line on
stderr; 130 / 143 (128 + the signal) training stopped by SIGINT / SIGTERM after saving the last finished step to
``<trial>/ckpts/interrupted-step=<N>.ckpt`` and ``last.ckpt`` (continue with ``resume=<that file>``).
"""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

MODES = ("train", "validate", "test", "export")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + error
        self.exit(2, f"error: {message} (see python launch.py --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config; a path not found as given is looked up under configs/")
    mode = p.add_mutually_exclusive_group()
    helps = {
        "train": "train (and test at the end); resume=<ckpt> continues a run",
        "validate": "render the validation views of the checkpoint given by resume=<ckpt>",
        "test": "render the test orbit and its video for the checkpoint given by resume=<ckpt>",
        "export": "export (e.g. a mesh) from the checkpoint given by resume=<ckpt>",
    }
    for m in MODES:
        mode.add_argument(f"--{m}", action="store_true", help=helps[m])
    p.add_argument("--gpu", default="0", help="comma-separated device ids, e.g. 0 or 0,1 (several: DDP)")
    p.add_argument("--debug", action="store_true", help="show full tracebacks of errors")
    p.add_argument(
        "--describe",
        nargs=2,
        metavar=("KIND", "TYPE"),
        help="print the config fields of a registered module, e.g. --describe guidance stable-diffusion-guidance",
    )
    p.add_argument("--list", action="store_true", help="list the registered module types of every kind")
    return p


def rank_zero() -> bool:
    """True in the launching process (children of a multi-process run have LOCAL_RANK/NODE_RANK set)."""
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def parse_devices(spec: str) -> List[int]:
    from framework.errors import UserError

    try:
        ids = [int(x) for x in spec.split(",") if x.strip() != ""]
    except ValueError:
        raise UserError(f"--gpu '{spec}': expected comma-separated device ids such as 0 or 0,1") from None
    if not ids or any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise UserError(f"--gpu '{spec}': expected distinct non-negative device ids such as 0 or 0,1")
    return ids


def import_modules() -> None:
    from framework.builtin import import_builtin_modules
    from framework.experiment import import_custom_modules

    import_builtin_modules()
    import systems  # noqa: F401  (registers the systems)

    import_custom_modules()


def check_extras(extras: Sequence[str], parser: argparse.ArgumentParser) -> None:
    from framework.errors import UserError

    flags = [a for a in parser._option_string_actions if a.startswith("--")]
    for item in extras:
        if item.startswith("-"):
            match = difflib.get_close_matches(item.split("=")[0], flags, n=1)
            hint = f" (did you mean {match[0]}?)" if match else ""
            raise UserError(f"unknown flag '{item}'{hint}; flags: {', '.join(sorted(flags))}")


def command_line(argv: Sequence[str], resume: Optional[str] = None) -> str:
    """The shell command that reruns ``argv`` (``["launch.py", ...]``) from the current folder, every argument
    quoted (``shlex.quote``): a prompt with spaces, quotes or ``$(...)`` comes back as the same one argument and is
    never executed. With ``resume``, any ``resume=`` argument is replaced by ``resume=<resume>``."""
    import shlex

    args = list(argv)
    if resume is not None:
        args = [a for a in args if not a.lstrip("+").startswith("resume=")] + [f"resume={resume}"]
    return f"cd {shlex.quote(os.getcwd())} && python {shlex.join(args)}"


def make_trial_dir(trial: Path, cfg, config_path: Path, argv: Sequence[str]) -> None:
    """Fill the (empty, just reserved) trial folder with its configs and the command that reruns it."""
    from omegaconf import OmegaConf

    from framework.errors import UserError

    try:
        (trial / "configs").mkdir(parents=True)
        (trial / "ckpts").mkdir()
        (trial / "save").mkdir()
        OmegaConf.save(cfg, trial / "configs" / "parsed.yaml", resolve=True)
        shutil.copyfile(config_path, trial / "configs" / "raw.yaml")
        (trial / "cmd.txt").write_text(command_line(argv) + "\n")
    except OSError as e:
        raise UserError(
            f"cannot write the trial folder {trial}: {e.strerror or e}; set exp_root_dir=<a writable folder>"
        ) from None


def run(args: argparse.Namespace, extras: Sequence[str], argv: Sequence[str]) -> int:
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import ModelCheckpoint

    from framework import registry
    from framework.errors import UserError
    from framework.experiment import load_experiment, release_trial_dir, reserve_trial_dir
    from framework.utils.checkpoint import check_system, load_checkpoint, remove_stale_temporaries
    from framework.utils.seeding import seed_all
    from systems.preflight import check_argument_types, check_checkpoint_filename, check_resume

    mode = next((m for m in MODES if getattr(args, m)), None)
    if args.config is None or mode is None:
        raise UserError("give --config <yaml> and one of --train, --validate, --test, --export")
    import_modules()
    exp, cfg, config_path = load_experiment(args.config, extras)

    exp.timestamp = (None if rank_zero() else os.environ.get("FRAMEWORK_TRIAL_TIMESTAMP")) or time.strftime(
        "%Y%m%d-%H%M%S"
    )

    resume_data = resume_step = None
    if exp.resume:
        resume_data = load_checkpoint(exp.resume, "resume")
        check_system(resume_data, exp.system_type, exp.resume)
        resume_step = int(resume_data.get("global_step", 0))
    elif mode in ("test", "export", "validate") and rank_zero():
        print(f"warning: --{mode} without resume=<ckpt>: using freshly initialised weights", file=sys.stderr)

    devices = parse_devices(args.gpu)
    if torch.cuda.is_available():
        accelerator, n_dev = "gpu", devices
    else:
        accelerator, n_dev = "cpu", len(devices)
        if rank_zero():
            extra = f" with {n_dev} processes (DDP over gloo)" if n_dev > 1 else ""
            print(f"CUDA is not available: running on CPU{extra}", file=sys.stderr)
    n_proc = len(devices)
    # Unused-parameter detection: with several particles, or a material that skips its normals in early steps, some
    # parameters get no gradient in a step, which plain DDP rejects.
    strategy = "ddp_find_unused_parameters_true" if n_proc > 1 else "auto"
    if n_proc > 1:
        os.environ["FRAMEWORK_TRIAL_TIMESTAMP"] = exp.timestamp  # the DDP children share the trial folder

    rank = int(os.environ.get("LOCAL_RANK", 0))
    seed_all(exp.seed + rank)
    datamodule = registry.find("data", exp.data_type)(exp.data, seed=exp.seed)
    system = registry.find("system", exp.system_type)(exp.system, seed=exp.seed)
    if resume_data is not None:
        # what Lightning would fail on with a traceback, or would silently keep from the checkpoint
        check_resume(system, resume_data, exp.resume, mode, exp.trainer.get("max_steps"))
        resume_data = None

    def source(key: str) -> str:  # where a trainer/checkpoint value came from, for messages
        given = [e.split("=", 1)[0].lstrip("+") for e in extras]
        return f"the command-line override '{key}=...'" if key in given else str(config_path)

    if mode != "export":
        check_argument_types(pl.Trainer.__init__, exp.trainer, "trainer", source)
        check_argument_types(ModelCheckpoint.__init__, exp.checkpoint, "checkpoint", source)
        check_checkpoint_filename(exp.checkpoint, source)

    # The trial folder is claimed now (unique even for runs started in the same second) and released again if the
    # run stops before writing into it; what follows is built with its final path.
    if rank_zero():
        trial, created = reserve_trial_dir(exp, resume_step)
        if n_proc > 1:
            os.environ["FRAMEWORK_TRIAL_DIR"] = str(trial)  # the DDP children share it
        if exp.resume:
            remove_stale_temporaries(Path(exp.resume).parent)  # left by a process killed while saving
    else:
        trial, created = Path(os.environ["FRAMEWORK_TRIAL_DIR"]), []
    try:
        trainer, interrupt = _build_and_fill(
            mode, exp, cfg, config_path, argv, system, trial, accelerator, n_dev, strategy
        )
    except BaseException:
        release_trial_dir(created)
        raise
    system.set_save_dir(trial / "save")

    if mode == "export":
        if exp.resume:
            system.load_for_eval(exp.resume)
        for path in system.export():
            print(f"exported {path}")
        return 0

    if mode == "train":
        code = fit(trainer, system, datamodule, exp.resume, interrupt, trial, argv)
        if code is not None:
            return code
        trainer.test(system, datamodule=datamodule)
    elif mode == "validate":
        trainer.validate(system, datamodule=datamodule, ckpt_path=exp.resume, weights_only=True)
    elif mode == "test":
        trainer.test(system, datamodule=datamodule, ckpt_path=exp.resume, weights_only=True)
    if rank_zero():
        print(f"trial folder: {trial}")
    return 0


def _build_and_fill(mode, exp, cfg, config_path, argv, system, trial, accelerator, n_dev, strategy):
    """Build the Lightning objects (their checks of the values fail before anything is written), check the output
    space, then write the trial folder's configs and command. Returns ``(trainer, interrupt)``."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    from systems.atomic_checkpoint import AtomicCheckpointIO
    from systems.fault_tolerance import InterruptCheckpoint
    from systems.loggers import extra_loggers
    from systems.preflight import build_lightning, check_output_space

    trainer = interrupt = None
    if mode != "export":
        interrupt = InterruptCheckpoint(trial / "ckpts")
        checkpoints = build_lightning(
            "checkpoint",
            lambda: ModelCheckpoint(dirpath=str(trial / "ckpts"), **exp.checkpoint),
            exp.checkpoint,
        )
        loggers = [
            TensorBoardLogger(str(trial), name="tb_logs", version=""),
            CSVLogger(str(trial), name="csv_logs", version=""),
            *extra_loggers(system.cfg.loggers, trial, system.key("loggers")),
        ]
        trainer = build_lightning(
            "trainer",
            lambda: pl.Trainer(
                accelerator=accelerator,
                devices=n_dev,
                strategy=strategy,
                callbacks=[checkpoints, interrupt] if mode == "train" else [],
                logger=loggers,
                default_root_dir=str(trial),
                use_distributed_sampler=False,
                plugins=[AtomicCheckpointIO()],
                # analytic normals need autograd in validation and test (threestudio does the same)
                **{"inference_mode": False, **exp.trainer},
            ),
            exp.trainer,
        )
    if mode == "train":
        system.configure_optimizers()  # optimizer and scheduler arguments fail here, not at the first step
    if rank_zero():
        check_output_space(trial, system, checkpoints=2 if mode == "train" else 0)
        make_trial_dir(trial, cfg, config_path, argv)
    return trainer, interrupt


def fit(
    trainer, system, datamodule, resume: Optional[str], interrupt, trial: Path, argv: Sequence[str] = ()
) -> Optional[int]:
    """``trainer.fit``; a run stopped by SIGINT/SIGTERM returns its exit status (128 + signal), else None."""
    import errno
    import signal

    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from framework.errors import UserError
    from systems.fault_tolerance import TrainingInterrupted, exit_status

    try:
        trainer.fit(system, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    except TrainingInterrupted as e:
        if rank_zero():
            print(f"{e}; the whole command: {command_line(argv, str(e.paths[0]))}", file=sys.stderr)
        return e.exit_status
    except SIGTERMException:  # Lightning's handler, while the fit was set up (sanity check): nothing to save
        if rank_zero():
            print("interrupted by SIGTERM before training began; nothing was saved", file=sys.stderr)
        return exit_status(signal.SIGTERM)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise UserError(
                f"cannot write to the trial folder {trial} at step {trainer.global_step} ({e.strerror}); "
                "the checkpoints written before are kept"
            ) from None
        raise
    if interrupt.signum is not None:  # arrived after the last step: training is complete, --test is skipped
        if rank_zero():
            name = signal.Signals(interrupt.signum).name
            ckpts = trial / "ckpts"
            print(f"{name} received after the last training step; checkpoints are in {ckpts}", file=sys.stderr)
        return exit_status(interrupt.signum)
    return None


def describe(kind: str, name: str) -> int:
    from framework import registry
    from framework.config import describe as describe_config
    from framework.errors import UserError

    import_modules()
    if kind not in registry.KINDS:
        match = difflib.get_close_matches(kind, list(registry.KINDS), n=1)
        hint = f" (did you mean {match[0]}?)" if match else ""
        raise UserError(f"--describe: unknown kind '{kind}'{hint}; kinds: {', '.join(registry.KINDS)}")
    cls = registry.find(kind, name)
    print(f"{kind} '{name}' ({cls.__module__}.{cls.__qualname__})")
    print(describe_config(cls.Config))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
    except SystemExit as e:  # argparse has printed its one-line error (or --help)
        return int(e.code or 0)
    from framework.errors import UserError

    try:
        check_extras(extras, parser)
        if args.list:
            from framework import registry

            import_modules()
            for kind in registry.KINDS:
                print(f"{kind}: {', '.join(registry.names(kind))}")
            return 0
        if args.describe:
            return describe(*args.describe)
        return run(args, extras, ["launch.py", *argv])
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        # A path the OS refuses, met by a library that does not name it: still the user's input, still one line.
        import errno

        if args.debug or e.errno not in (errno.ENAMETOOLONG, errno.ELOOP):
            raise
        name = str(e.filename or "")
        shown = name if len(name) <= 120 else f"{name[:60]}...{name[-40:]} ({len(name)} characters)"
        print(f"error: the path '{shown}' cannot be used: {e.strerror}; give a shorter path", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside training (while loading, building, exporting): nothing to save
        if args.debug:
            raise
        print("interrupted by SIGINT outside training; nothing was saved", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
