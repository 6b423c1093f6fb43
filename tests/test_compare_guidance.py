"""scripts/compare_guidance.py: every rule of lab/toy/guidance_rules.py trains on the toy prior in 2D and 3D and gets
its table row (a few steps each: that the settings are valid for every rule, not what they score)."""

import importlib.util
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_every_rule_trains_and_gets_a_row(tmp_path, capsys, monkeypatch):
    from lab.toy.guidance_rules import rules

    monkeypatch.chdir(REPO)
    spec = importlib.util.spec_from_file_location("compare_guidance", REPO / "scripts" / "compare_guidance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--out", str(tmp_path), "--particles", "2", "--steps-2d", "3", "--steps-3d", "4", "--views", "2",
            "--reference-samples", "4", "--threads", str(torch.get_num_threads()), "data.n_test_views=2"]
    assert module.main(argv) == 0
    out = capsys.readouterr().out
    for dim in ("2d", "3d"):
        for rule in rules(dim, 4).values():
            assert f"| {rule.label} |" in out, (dim, rule.label)
    assert rules("3d", 4).keys() > rules("2d", 4).keys()  # the render-space rules only in 3D
