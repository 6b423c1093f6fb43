"""launch.py end to end on the image-fitting system: CLI, trial folder, checkpoints, resume, test, export."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import launch
from tests.conftest import REPO_ROOT

FAST = ["trainer.log_every_n_steps=1", "data.height=16", "data.width=16", "data.n_test_views=4", "data.batch_size=64"]


def run(tmp_path, *args, tag="t"):
    argv = ["--config", "image-fitting.yaml", *args, f"exp_root_dir={tmp_path}", f"tag={tag}", "use_timestamp=false"]
    return launch.main(argv + FAST)


def trial(tmp_path, tag="t") -> Path:
    return tmp_path / "image-fitting" / tag


def test_five_step_train_writes_the_trial_folder(tmp_path):
    assert run(tmp_path, "--train", "trainer.max_steps=5", "trainer.val_check_interval=5",
               "checkpoint.every_n_train_steps=5") == 0
    t = trial(tmp_path)
    for rel in ["configs/parsed.yaml", "configs/raw.yaml", "cmd.txt", "ckpts/last.ckpt", "ckpts/epoch=0-step=5.ckpt",
                "save/it5-val/0000.png", "save/it5-test/0003.png", "save/it5-test.mp4", "csv_logs/metrics.csv"]:
        assert (t / rel).is_file(), rel
    assert list((t / "tb_logs").glob("events.*"))
    assert (t / "save/it5-test.mp4").stat().st_size > 1000
    assert "--train" in (t / "cmd.txt").read_text()
    metrics = (t / "csv_logs/metrics.csv").read_text()
    assert "train/loss_mse" in metrics and "train/lambda_l1" in metrics


def test_checkpoint_holds_trainable_state_and_metadata(tmp_path):
    run(tmp_path, "--train", "trainer.max_steps=3")
    ckpt = torch.load(trial(tmp_path) / "ckpts/last.ckpt", weights_only=True)
    assert set(ckpt["state_dict"]) == {"field.grid", "field.network.0.weight", "field.network.0.bias",
                                       "field.network.2.weight", "field.network.2.bias"}
    assert ckpt["framework"] == {"system_type": "image-fitting-system", "global_step": 3, "optimizer": "Adam",
                                 "scheduler": None}
    groups = ckpt["optimizer_states"][0]["param_groups"]
    assert [g["name"] for g in groups] == ["field.grid", "field.network"]
    assert [g["lr"] for g in groups] == [0.05, 0.01]


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path):
    common = ["trainer.max_steps=12", "checkpoint.every_n_train_steps=6", "trainer.val_check_interval=6"]
    run(tmp_path, "--train", *common, tag="full")
    mid = trial(tmp_path, "full") / "ckpts/epoch=0-step=6.ckpt"
    run(tmp_path, "--train", *common, f"resume={mid}", tag="resumed")
    a = torch.load(trial(tmp_path, "full") / "ckpts/last.ckpt", weights_only=True)
    b = torch.load(trial(tmp_path, "resumed") / "ckpts/last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 12
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    for i in sa:
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), (i, k)
    # and a different seed really gives different parameters (the comparison can fail)
    run(tmp_path, "--train", *common, "seed=1", tag="seed1")
    c = torch.load(trial(tmp_path, "seed1") / "ckpts/last.ckpt", weights_only=True)
    assert not torch.equal(a["state_dict"]["field.grid"], c["state_dict"]["field.grid"])


def test_test_and_export_from_a_checkpoint_use_its_step(tmp_path):
    run(tmp_path, "--train", "trainer.max_steps=4", tag="train")
    ckpt = trial(tmp_path, "train") / "ckpts/last.ckpt"
    assert run(tmp_path, "--test", f"resume={ckpt}", tag="test") == 0
    assert (trial(tmp_path, "test") / "save/it4-test.mp4").is_file()
    assert run(tmp_path, "--export", f"resume={ckpt}", tag="export") == 0
    assert (trial(tmp_path, "export") / "save/it4-export/field.png").is_file()
    assert run(tmp_path, "--validate", f"resume={ckpt}", tag="val") == 0
    assert (trial(tmp_path, "val") / "save/it4-val/0000.png").is_file()


def test_existing_trial_folder_is_never_overwritten(tmp_path, capsys):
    run(tmp_path, "--train", "trainer.max_steps=1")
    assert run(tmp_path, "--train", "trainer.max_steps=1") == 2
    assert "exists already" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--config", "image-fitting.yaml"], "one of --train"),
        (["--config", "image-fitting.yaml", "--train", "--test"], "not allowed with argument"),
        (["--config", "image-fitting.yaml", "--trian"], "did you mean --train"),
        (["--config", "nope.yaml", "--train"], "not found"),
        (["--config", "image-fitting.yaml", "--train", "--gpu", "a"], "--gpu 'a'"),
        (["--config", "image-fitting.yaml", "--train", "system.hidden_dmi=3"], "system.hidden_dmi"),
        (["--config", "image-fitting.yaml", "--test", "resume=/no/such.ckpt"], "does not exist"),
    ],
)
def test_cli_errors_are_one_line_and_leave_nothing_behind(tmp_path, capsys, argv, fragment):
    code = launch.main(argv + [f"exp_root_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.iterdir())


def test_list_and_describe(capsys):
    assert launch.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "image-fitting-system" in out and "image-datamodule" in out
    assert launch.main(["--describe", "data", "image-datamodule"]) == 0
    assert "Random pixels per training step." in capsys.readouterr().out


def test_custom_extension_folder_registers_modules(tmp_path, monkeypatch):
    from framework import registry
    from framework.experiment import import_custom_modules

    (tmp_path / "my_data.py").write_text(
        "from framework import registry\n"
        "from framework.data.image import ImageDataModule\n"
        "@registry.register('data', 'my-custom-datamodule')\n"
        "class Mine(ImageDataModule):\n    pass\n"
    )
    assert import_custom_modules(tmp_path) == ["custom.my_data"]
    assert registry.find("data", "my-custom-datamodule").__name__ == "Mine"


def test_two_process_cpu_ddp(tmp_path):
    """--gpu 0,1 on a machine without CUDA: 2 CPU processes (DDP over gloo), one trial folder written by rank 0."""
    cmd = [sys.executable, "launch.py", "--config", "image-fitting.yaml", "--train", "--gpu", "0,1",
           f"exp_root_dir={tmp_path}", "tag=ddp", "trainer.max_steps=4", "trainer.val_check_interval=4", *FAST]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes" in proc.stderr
    trials = list((tmp_path / "image-fitting").iterdir())
    assert len(trials) == 1
    ckpt = torch.load(trials[0] / "ckpts/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4
    assert (trials[0] / "save/it4-test.mp4").is_file()
