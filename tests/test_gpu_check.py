"""The GPU check script runs end to end on CPU (--dry-run), so that it works the day a GPU is lent."""

import json
import sys

import pytest

from tests.conftest import REPO_ROOT


def gpu_check():
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import gpu_check

    return gpu_check


def checks(out: str):
    return {line.split("|")[2].strip(): line.split("|")[3].strip() for line in out.splitlines()
            if line.startswith("| ") and line.count("|") == 4}


def test_gpu_check_dry_run(tmp_path, capsys):
    """Every default section but the recipes (their own slow test)."""
    rows_file = tmp_path / "rows.json"
    assert gpu_check().main(["--dry-run", "--skip", "recipes", "--work-dir", str(tmp_path / "w"),
                             "--json", str(rows_file)]) == 0
    out = capsys.readouterr().out
    rows = checks(out)
    for check in ["sphere: opacity_vs_exact_torch", "SDS (CFG 100): ms/step (x SDS)",
                  "VSD shared (defaults): ms/step (x SDS)", "VSD separate, switches on: ms/step (x SDS)",
                  "target: VSD shared (defaults) <= 2.5x SDS", "VSD shared: step ms (plain / profiled)",
                  "vsd.yaml 64x64, switches off (defaults): steps/s in the loop (x 3.2)",
                  "vsd.yaml 64x64, switches on: steps/s in the loop (x 3.2)"]:
        assert check in rows, check
    assert any(c.startswith("prolificdreamer-geometry.yaml (16x16, grid 32): ms/step") for c in rows)
    assert any(c.startswith("prolificdreamer-texture.yaml (16x16, grid 32): ms/step") for c in rows)
    assert rows["vsd.yaml 64x64, switches on: status"] == "ok"
    assert any(c.startswith("VSD shared: LoRA UNet training forward / ") for c in rows)  # the profile's rows
    assert "VSD shared: the same folded: one batch-4 call with grad, backward through one row (lower bound)" in rows
    assert "FAILED" not in out
    assert [tuple(r) for r in json.loads(rows_file.read_text())][-1][0] == "stages"


@pytest.mark.slow
def test_gpu_check_dry_run_recipes(tmp_path, capsys):
    """The recipes section: every real-model recipe of configs/ trained a step on the tiny model at each of its
    training resolutions (about 1-2 minutes)."""
    assert gpu_check().main(["--dry-run", "--sections", "recipes", "--work-dir", str(tmp_path)]) == 0
    rows = checks(capsys.readouterr().out)
    recipe_rows = {c: v for c, v in rows.items() if c.endswith(": peak memory")}
    for label in ["prolificdreamer.yaml 64x64", "prolificdreamer.yaml 512x512", "dreamfusion-sd.yaml 64x64",
                  "sds-image.yaml", "vsd-image.yaml"]:
        assert recipe_rows[f"{label}: peak memory"] == "n/a (cpu)", label
    named = {c.split(" ")[0].rstrip(":") for c in recipe_rows}
    real = {p.name for p in (REPO_ROOT / "configs").glob("*.yaml") if "prompt_processor" in p.read_text()
            and not p.is_symlink()} - gpu_check().STAGE_RECIPES
    assert named == real  # every real-model recipe, once (vsd.yaml is prolificdreamer.yaml)
    assert all(v == "n/a (cpu)" for v in recipe_rows.values())


def test_gpu_check_refuses_to_run_without_cuda(capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert gpu_check().main([]) == 2
    assert "--dry-run" in capsys.readouterr().err
