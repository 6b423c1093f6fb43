"""docs/security.md, "What a run writes, and where": every write inside the trial folder whatever the config says,
cmd.txt and the interrupt message rerunnable as printed (every argument shell-quoted, nothing executed), checkpoints
written atomically in their own folder (a kill at any moment leaves the previous file whole; TMPDIR is never used),
distinct trial folders for runs started in the same second.
"""

import os
import shlex
import signal
import subprocess
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import pytest
import torch

import launch
from framework.experiment import ExperimentConfig, reserve_trial_dir
from framework.utils.checkpoint import atomic_save, remove_stale_temporaries
from tests.conftest import REPO_ROOT
from tests.test_fault_tolerance import inject  # noqa: F401  (fixture)

FAST = ["trainer.log_every_n_steps=1", "data.height=8", "data.width=8", "data.n_test_views=1", "data.batch_size=16",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def files_under(root: Path) -> set:
    return {p for p in root.rglob("*") if p.is_file()}


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


# ------------------------------------------------------------------------------------------------ containment
@pytest.mark.parametrize("filename", ["../../escaped", "/tmp/escaped-{step}", "~/escaped", "sub/../../escaped"])
def test_a_checkpoint_filename_outside_ckpts_is_refused_before_anything_is_written(filename, tmp_path, capsys):
    out = tmp_path / "out"
    code = launch.main(["--config", "image-fitting.yaml", "--train", f"exp_root_dir={out}", "trainer.max_steps=2",
                        *FAST, f"checkpoint.filename={filename}"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "config error: checkpoint.filename:" in line and "would write outside the trial's ckpts/" in line
    assert not out.exists() and not files_under(tmp_path)


def test_everything_a_hostile_config_writes_stays_in_its_trial_folder(tmp_path, capsys):
    """A tag and name full of ``..``, ``/`` and ``$(...)``, a checkpoint file name in a subfolder, training, testing and
    export: every file written is under the trial folder, and nothing ran."""
    canary = tmp_path / "ran"
    root = tmp_path / "runs"
    argv = ["--config", "image-fitting.yaml", "--train", f"exp_root_dir={root}", "trainer.max_steps=3",
            "checkpoint.every_n_train_steps=1", "checkpoint.filename=sub/{step}", *FAST,
            f"tag=../../$(touch {canary})", "name=../../name", "use_timestamp=false"]
    before = files_under(tmp_path)
    assert launch.main(argv) == 0
    (trial,) = [p for p in root.glob("*/*") if p.is_dir()]
    assert trial.parent.parent == root
    assert launch.main(["--config", str(trial / "configs" / "parsed.yaml"), "--export",
                        f"resume={trial / 'ckpts' / 'last.ckpt'}", f"exp_root_dir={root}", "tag=export"]) == 0
    new = files_under(tmp_path) - before
    trials = [p for p in root.glob("*/*") if p.is_dir()]
    assert new and all(any(p.is_relative_to(t) for t in trials) for p in new), sorted(new)
    assert (trial / "ckpts" / "sub" / "step=3.ckpt").is_file()
    assert not canary.exists()


# ------------------------------------------------------------------------------------------------ rerunning
def bash_arguments(command: str, cwd: Path) -> list:
    """The arguments bash would give ``python`` when running ``command`` (python replaced by a function that prints
    them NUL-separated): what a rerun of cmd.txt passes, without running it."""
    script = "python() { printf '%s\\0' \"$@\"; }\n" + command
    out = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, check=True).stdout
    return out.decode().split("\0")[:-1]


def test_cmd_txt_is_shell_quoted_and_reruns_the_same_arguments(tmp_path):
    canary = tmp_path / "ran"
    prompt_like = f"a cat's \"toy\" $(touch {canary}) `touch {canary}` ; rm -rf / & | > x"
    argv = ["--config", "image-fitting.yaml", "--train", f"exp_root_dir={tmp_path / 'out'}", "trainer.max_steps=1",
            *FAST, "use_timestamp=false", "tag=t", f"description={prompt_like}"]
    assert launch.main(argv) == 0
    command = (tmp_path / "out" / "image-fitting" / "t" / "cmd.txt").read_text().strip()
    assert bash_arguments(command, tmp_path) == ["launch.py", *argv]
    assert shlex.split(command)[:3] == ["cd", os.getcwd(), "&&"]
    assert not canary.exists()


def test_the_interrupt_message_command_resumes_as_printed_also_without_timestamp(tmp_path, inject, capsys):  # noqa: F811
    """use_timestamp=false: the printed command reuses the tag, whose folder exists; the resumed run gets its own
    folder beside it (``<tag>@resume-step<N>``), which is never overwritten, and finishes the run."""
    inject({2: "sigint"})
    argv = ["--config", "image-fitting.yaml", "--train", f"exp_root_dir={tmp_path}", "trainer.max_steps=5", *FAST,
            "use_timestamp=false", "tag=t"]
    assert launch.main(argv) == 130
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("interrupted by SIGINT"))
    command = line.split("; the whole command: ", 1)[1]
    inject({})
    printed = bash_arguments(command, tmp_path)
    assert printed[0] == "launch.py" and printed[-1] == f"resume={tmp_path / 'image-fitting' / 't' / 'ckpts' / 'interrupted-step=3.ckpt'}"
    assert launch.main(printed[1:]) == 0
    resumed = tmp_path / "image-fitting" / "t@resume-step3"
    assert torch.load(resumed / "ckpts" / "last.ckpt", weights_only=True)["global_step"] == 5
    assert torch.load(tmp_path / "image-fitting" / "t" / "ckpts" / "last.ckpt", weights_only=True)["global_step"] == 3


# ------------------------------------------------------------------------------------------------ same second
def _reserve(root: str) -> str:
    exp = ExperimentConfig(name="n", tag="t", exp_root_dir=root, timestamp="20260101-000000")
    return str(reserve_trial_dir(exp)[0])


def test_runs_started_in_the_same_second_get_distinct_folders(tmp_path):
    with get_context("fork").Pool(6) as pool:
        folders = pool.map(_reserve, [str(tmp_path)] * 12)
    assert len(set(folders)) == 12
    names = sorted(Path(f).name for f in folders)
    assert names[0] == "t@20260101-000000" and set(names[1:]) == {f"t@20260101-000000-{i}" for i in range(2, 13)}


def test_two_launches_in_the_same_second(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101-000000")
    argv = ["--config", "image-fitting.yaml", "--train", f"exp_root_dir={tmp_path}", "trainer.max_steps=1", *FAST,
            "tag=t"]
    assert launch.main(argv) == 0 and launch.main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "image-fitting").iterdir()) == ["t@20260101-000000",
                                                                            "t@20260101-000000-2"]


def test_a_failed_run_releases_its_reserved_folder(tmp_path, capsys):
    code = launch.main(["--config", "image-fitting.yaml", "--train", f"exp_root_dir={tmp_path / 'a' / 'b'}",
                        "trainer.max_steps=1", *FAST, "trainer.precision=17"])
    assert code == 2 and "Precision 17 is invalid" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


# ------------------------------------------------------------------------------------------------ atomic checkpoints
def test_a_failed_write_leaves_the_previous_checkpoint_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_save({"step": 1, "w": torch.ones(10)}, path)
    real_fsync = os.fsync

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        atomic_save({"step": 2, "w": torch.zeros(10)}, path)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


CHILD = """
import sys, torch
sys.path.insert(0, {repo!r})
from framework.utils.checkpoint import atomic_save  # what AtomicCheckpointIO.save_checkpoint calls
i = 0
while True:
    i += 1
    atomic_save({{"i": i, "w": torch.full((4_000_000,), float(i))}}, {path!r})
    print(i, flush=True)
"""


def test_a_kill_at_any_moment_leaves_last_ckpt_whole(tmp_path):
    """A process saving 16 MB checkpoints over last.ckpt in a loop is SIGKILLed at several moments: last.ckpt always
    loads and is one complete save; the temporaries of killed writes are removed by remove_stale_temporaries."""
    path = tmp_path / "ckpts" / "last.ckpt"
    path.parent.mkdir()
    for delay in (0.0, 0.07, 0.23):
        proc = subprocess.Popen([sys.executable, "-c", CHILD.format(repo=str(REPO_ROOT), path=str(path))],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip()  # one save done: there is a previous file from now on
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        data = torch.load(path, weights_only=True)
        assert torch.equal(data["w"], torch.full((4_000_000,), float(data["i"])))
        remove_stale_temporaries(path.parent)
        assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_checkpoints_never_go_through_tmpdir(tmp_path, monkeypatch):
    """A TMPDIR that cannot be written (full, or gone) does not matter: checkpoints are written beside themselves."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmpdir"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "no-such-tmpdir"))
    argv = ["--config", "image-fitting.yaml", "--train", f"exp_root_dir={tmp_path / 'out'}", "trainer.max_steps=2",
            "checkpoint.every_n_train_steps=1", *FAST, "use_timestamp=false", "tag=t"]
    assert launch.main(argv) == 0
    ckpts = tmp_path / "out" / "image-fitting" / "t" / "ckpts"
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt", "last.ckpt"]


def test_stale_temporaries_of_live_processes_are_kept(tmp_path):
    live = tmp_path / f".last.ckpt.{os.getpid()}.abc.tmp"
    dead = tmp_path / ".last.ckpt.999999999.abc.tmp"
    other = tmp_path / "notes.tmp"
    for p in (live, dead, other):
        p.write_text("x")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert live.exists() and other.exists() and not dead.exists()
