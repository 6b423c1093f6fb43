"""Fault tolerance end to end on the image-fitting system: SIGINT/SIGTERM mid-run, NaN/Inf steps, finite checkpoints.

The exactness claims are tested with ``torch.equal`` on every parameter and every optimizer-state tensor, against
runs that differ where they must (a clean run of fewer steps, an uninterrupted run).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import launch
from systems.image_fitting import ImageFittingSystem
from tests.conftest import REPO_ROOT

FAST = ["trainer.log_every_n_steps=1", "data.height=16", "data.width=16", "data.n_test_views=2", "data.batch_size=64",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def run(tmp_path, *args, tag="t"):
    argv = ["--config", "image-fitting.yaml", "--train", *args, f"exp_root_dir={tmp_path}", f"tag={tag}",
            "use_timestamp=false"]
    return launch.main(argv + FAST)


def ckpts(tmp_path, tag="t") -> Path:
    return tmp_path / "image-fitting" / tag / "ckpts"


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_training_state(a: dict, b: dict) -> None:
    """Every parameter and every optimizer-state tensor equal, bit for bit."""
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        assert sa[i].keys() == sb[i].keys()
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), (i, k)


def error_lines(err: str) -> list:
    return [line for line in err.splitlines() if line.startswith("error:")]


class _NaNGradient(torch.autograd.Function):
    """Zero in the forward pass (the loss stays finite), NaN gradient in the backward pass."""

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x.new_zeros(())

    @staticmethod
    def backward(ctx, grad):
        return torch.full(ctx.shape, float("nan"))


@pytest.fixture
def inject(monkeypatch):
    """``inject({step: what})``: at those global steps the image-fitting system's training_losses misbehaves.

    what: 'nan' / 'inf' (loss_mse), 'grad-nan' (finite loss, NaN gradient of field.grid), 'weights-nan' (a NaN
    written into field.grid), 'sigint' / 'sigint-twice' (the signal sent to this process inside the step), or a list
    to record the batch of each step into.
    """
    original = ImageFittingSystem.training_losses

    def install(plan):
        def patched(self, batch):
            step = self.global_step
            what = plan(step) if callable(plan) else plan.get(step)
            if what == "weights-nan":
                with torch.no_grad():
                    self.field.grid[0, 0, 0, 0] = float("nan")
            out = original(self, batch)
            if what == "nan":
                out["loss_mse"] = out["loss_mse"] * float("nan")
            elif what == "inf":
                out["loss_mse"] = out["loss_mse"] + float("inf")
            elif what == "grad-nan":
                out["loss_mse"] = out["loss_mse"] + _NaNGradient.apply(self.field.grid)
            elif what in ("sigint", "sigint-twice"):
                os.kill(os.getpid(), signal.SIGINT)
                if what == "sigint-twice":
                    os.kill(os.getpid(), signal.SIGINT)
            elif isinstance(what, list):
                what.append((step, batch["coords"][:4].clone()))
            return out

        monkeypatch.setattr(ImageFittingSystem, "training_losses", patched)

    return install


# ---------------------------------------------------------------------------------------------------- signals
def interrupt_when_training(cmd, progress: Path, log: Path, timeout: float = 200.0) -> str:
    """Start ``cmd``, wait until ``progress`` exists (training is under way), send SIGTERM; expect exit status 143.

    Returns its stderr (written to ``log``: a pipe left unread could fill up and stall the run).
    """
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True)
        try:
            deadline = time.monotonic() + timeout
            while not progress.exists():
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"no training progress within {timeout} s"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert proc.returncode == 143, text[-3000:]
    return text


def test_sigterm_to_a_real_run_saves_the_step_and_resume_equals_the_uninterrupted_run(tmp_path):
    """A real ``python launch.py`` run gets SIGTERM mid-run; resume= from its checkpoint ends where an uninterrupted
    run ends, bit for bit."""
    cmd = [sys.executable, "launch.py", "--config", "image-fitting.yaml", "--train", f"exp_root_dir={tmp_path}",
           "tag=killed", "use_timestamp=false", "trainer.max_steps=100000", "trainer.val_check_interval=100000",
           "checkpoint.every_n_train_steps=2", *FAST]
    err = interrupt_when_training(cmd, ckpts(tmp_path, "killed") / "epoch=0-step=2.ckpt", tmp_path / "stderr.txt")
    assert "Traceback" not in err
    saved = sorted(ckpts(tmp_path, "killed").glob("interrupted-step=*.ckpt"))
    assert len(saved) == 1, err[-3000:]
    n = int(saved[0].stem.split("=")[1])
    assert n >= 2
    assert f"interrupted by SIGTERM: saved step {n} to {saved[0]}" in err
    interrupted = load(saved[0])
    assert interrupted["global_step"] == n
    assert_same_training_state(interrupted, load(ckpts(tmp_path, "killed") / "last.ckpt"))
    assert not list((tmp_path / "image-fitting/killed/save").glob("it*-test*")), "--test must be skipped"

    total = ["trainer.val_check_interval=100000", f"trainer.max_steps={n + 3}"]
    assert run(tmp_path, *total, f"resume={saved[0]}", tag="resumed") == 0
    assert run(tmp_path, *total, tag="full") == 0
    resumed, full = load(ckpts(tmp_path, "resumed") / "last.ckpt"), load(ckpts(tmp_path, "full") / "last.ckpt")
    assert resumed["global_step"] == full["global_step"] == n + 3
    assert_same_training_state(resumed, full)


def handlers():
    return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)


def test_sigint_mid_step_finishes_the_step_saves_it_and_resume_is_exact(tmp_path, inject, capsys):
    before = handlers()
    inject({4: "sigint"})  # the signal arrives inside step 4's forward pass
    assert run(tmp_path, "trainer.max_steps=9", tag="stopped") == 130
    err = capsys.readouterr().err
    assert "interrupted by SIGINT: saved step 5" in err, err
    assert "Traceback" not in err
    saved = ckpts(tmp_path, "stopped") / "interrupted-step=5.ckpt"
    assert load(saved)["global_step"] == 5  # step 4 was completed, not cut short
    assert sorted(p.name for p in ckpts(tmp_path, "stopped").iterdir()) == ["interrupted-step=5.ckpt", "last.ckpt"]
    assert handlers() == before  # handlers put back

    inject({})
    assert run(tmp_path, "trainer.max_steps=9", f"resume={saved}", tag="resumed") == 0
    assert run(tmp_path, "trainer.max_steps=9", tag="full") == 0
    assert_same_training_state(load(ckpts(tmp_path, "resumed") / "last.ckpt"),
                               load(ckpts(tmp_path, "full") / "last.ckpt"))


def test_a_second_signal_stops_at_once_without_saving(tmp_path, inject):
    before = handlers()
    inject({2: "sigint-twice"})
    with pytest.raises(SystemExit) as stop:  # Lightning's KeyboardInterrupt shutdown
        run(tmp_path, "trainer.max_steps=6")
    assert stop.value.code == 1
    assert not list(ckpts(tmp_path).glob("interrupted-*"))
    assert handlers() == before


@pytest.mark.parametrize("n_val_views", [1, 2])
def test_sigterm_while_the_fit_is_set_up(tmp_path, monkeypatch, capsys, n_val_views):
    """SIGTERM during Lightning's sanity check, where Lightning's own handler is active: with more validation batches
    to go, Lightning stops there (nothing to save); after the last one, the run takes the signal over and saves the
    first step."""
    original = ImageFittingSystem.validation_panels
    sent = []

    def panels(self, batch):
        if self.trainer.sanity_checking and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch)

    monkeypatch.setattr(ImageFittingSystem, "validation_panels", panels)
    before = handlers()
    code = run(tmp_path, "trainer.max_steps=5", "trainer.num_sanity_val_steps=2", f"data.n_val_views={n_val_views}")
    err = capsys.readouterr().err
    assert code == 143 and "Traceback" not in err
    saved = sorted(p.name for p in ckpts(tmp_path).iterdir())
    if n_val_views == 2:
        assert "interrupted by SIGTERM before training began; nothing was saved" in err
        assert saved == []
    else:
        assert "interrupted by SIGTERM: saved step 1" in err
        assert saved == ["interrupted-step=1.ckpt", "last.ckpt"]
    assert handlers() == before


# ---------------------------------------------------------------------------------------------------- NaN / Inf
@pytest.mark.parametrize("what,shown", [("nan", "loss_mse is NaN"), ("inf", "loss_mse is Inf")])
def test_a_nonfinite_loss_skips_the_step_and_changes_nothing(tmp_path, inject, capsys, what, shown):
    inject({3: what})
    assert run(tmp_path, "trainer.max_steps=4", tag="bad") == 0
    err = capsys.readouterr().err
    assert f"warning: step 3 skipped, parameters and optimizer state unchanged: {shown}" in err, err
    inject({})
    assert run(tmp_path, "trainer.max_steps=3", tag="clean") == 0
    bad, clean = load(ckpts(tmp_path, "bad") / "last.ckpt"), load(ckpts(tmp_path, "clean") / "last.ckpt")
    assert bad["global_step"] == 4 and clean["global_step"] == 3  # the skipped step counted as a step ...
    assert_same_training_state(bad, clean)  # ... but updated nothing (parameters, Adam moments and step count)


def test_a_nonfinite_gradient_names_its_parameter_group(tmp_path, inject, capsys):
    inject({2: "grad-nan"})
    assert run(tmp_path, "trainer.max_steps=3", tag="bad") == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if line.startswith("warning: step 2 skipped")]
    assert len(warning) == 1, err
    assert "parameter group 'field.grid' has NaN" in warning[0]
    assert "field.network" not in warning[0] and "loss_" not in warning[0]
    inject({})
    assert run(tmp_path, "trainer.max_steps=2", tag="clean") == 0
    assert_same_training_state(load(ckpts(tmp_path, "bad") / "last.ckpt"), load(ckpts(tmp_path, "clean") / "last.ckpt"))


def test_a_skipped_step_counts_so_the_next_step_draws_the_next_batch_and_resume_repeats_the_skip(tmp_path, inject):
    seen_bad, seen_clean = [], []
    inject(lambda s: "nan" if s == 3 else seen_bad)
    assert run(tmp_path, "trainer.max_steps=8", "checkpoint.every_n_train_steps=2", tag="bad") == 0
    inject(lambda s: seen_clean)
    assert run(tmp_path, "trainer.max_steps=8", tag="clean") == 0
    bad_batches, clean_batches = dict(seen_bad), dict(seen_clean)
    assert sorted(bad_batches) == [0, 1, 2, 4, 5, 6, 7]
    for step in bad_batches:  # step 4 after the skip draws batch 4, not a repeat of batch 3
        assert torch.equal(bad_batches[step], clean_batches[step]), step
    assert not torch.equal(clean_batches[3], clean_batches[4])
    bad = load(ckpts(tmp_path, "bad") / "last.ckpt")
    assert bad["global_step"] == 8
    assert int(bad["optimizer_states"][0]["state"][0]["step"]) == 7  # one optimizer update fewer

    inject({3: "nan"})  # resumed from step 2, the run meets the same NaN at step 3 and skips it as well
    assert run(tmp_path, "trainer.max_steps=8", f"resume={ckpts(tmp_path, 'bad') / 'epoch=0-step=2.ckpt'}",
               tag="resumed") == 0
    assert_same_training_state(load(ckpts(tmp_path, "resumed") / "last.ckpt"), bad)


def test_nonfinite_steps_in_a_row_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path, inject, capsys):
    inject(lambda s: "nan" if s >= 4 else None)
    code = run(tmp_path, "trainer.max_steps=20", "checkpoint.every_n_train_steps=2", "system.max_nonfinite_steps=3",
               tag="bad")
    err = capsys.readouterr().err
    assert code == 2
    (line,) = error_lines(err)
    assert line.startswith("error: training stopped at step 6: 3 steps in a row were skipped"), line
    assert "loss_mse is NaN" in line and "system.max_nonfinite_steps" in line
    assert f"the last checkpoint, {ckpts(tmp_path, 'bad')}" in line
    assert "Traceback" not in err
    names = sorted(p.name for p in ckpts(tmp_path, "bad").iterdir())
    assert names == ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt", "epoch=0-step=6.ckpt", "last.ckpt"]
    inject({})
    assert run(tmp_path, "trainer.max_steps=4", tag="clean") == 0
    clean = load(ckpts(tmp_path, "clean") / "last.ckpt")
    for name in names[1:]:  # every checkpoint from step 4 on holds the weights of the last good step
        saved = load(ckpts(tmp_path, "bad") / name)
        assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())
        assert_same_training_state(saved, clean)

    # the count of skips in a row is part of the checkpoint: resumed at step 6 (2 skips), the next skip stops it
    inject(lambda s: "nan" if s >= 4 else None)
    step6 = ckpts(tmp_path, "bad") / "epoch=0-step=6.ckpt"
    assert load(step6)["fault_tolerance"] == {"nonfinite_streak": 2}
    assert run(tmp_path, "trainer.max_steps=20", "system.max_nonfinite_steps=3", f"resume={step6}", tag="again") == 2
    assert "error: training stopped at step 6: 3 steps in a row" in capsys.readouterr().err


def test_a_checkpoint_with_nonfinite_weights_is_never_written(tmp_path, inject, capsys):
    inject({3: "weights-nan"})
    code = run(tmp_path, "trainer.max_steps=10", "checkpoint.every_n_train_steps=1", tag="bad")
    err = capsys.readouterr().err
    assert code == 2
    (line,) = error_lines(err)
    assert line == ("error: refusing to save a checkpoint at step 4: the weights [field.grid] (1) hold NaN or Inf; "
                    "the checkpoints saved before are kept")
    names = sorted(p.name for p in ckpts(tmp_path, "bad").iterdir())
    assert names == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt", "epoch=0-step=3.ckpt", "last.ckpt"]
    for name in names:
        assert all(torch.isfinite(v).all() for v in load(ckpts(tmp_path, "bad") / name)["state_dict"].values())
    assert load(ckpts(tmp_path, "bad") / "last.ckpt")["global_step"] == 3


# ---------------------------------------------------------------------------------------------------- DDP
@pytest.mark.slow
def test_sigterm_to_a_two_process_run_stops_both_after_the_same_step(tmp_path):
    """--gpu 0,1 on CPU: SIGTERM to the launching process only; both ranks stop after the same step, rank 0 saves
    it, and a resumed two-process run equals an uninterrupted one."""
    common = [sys.executable, "launch.py", "--config", "image-fitting.yaml", "--train", "--gpu", "0,1",
              f"exp_root_dir={tmp_path}", "use_timestamp=false", "trainer.val_check_interval=100000", *FAST]
    killed = common + ["tag=killed", "trainer.max_steps=100000", "checkpoint.every_n_train_steps=2"]
    interrupt_when_training(killed, ckpts(tmp_path, "killed") / "epoch=0-step=2.ckpt", tmp_path / "stderr.txt")
    (saved,) = ckpts(tmp_path, "killed").glob("interrupted-step=*.ckpt")
    n = int(saved.stem.split("=")[1])
    for tag, extra in (("resumed", [f"resume={saved}"]), ("full", [])):
        done = subprocess.run(common + [f"tag={tag}", f"trainer.max_steps={n + 2}", *extra], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    assert_same_training_state(load(ckpts(tmp_path, "resumed") / "last.ckpt"),
                               load(ckpts(tmp_path, "full") / "last.ckpt"))
