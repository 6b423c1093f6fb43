"""The GPU check script runs end to end on CPU (--dry-run), so that it works the day a GPU is lent."""

import sys

from tests.conftest import REPO_ROOT


def test_gpu_check_dry_run(tmp_path, capsys):
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import gpu_check

    assert gpu_check.main(["--dry-run", "--work-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for needle in ["| renderer | sphere: opacity_vs_exact_torch", "| guidance | VSD shared: ms/step",
                   "| training | vsd.yaml 2 steps + val + test: status | ok",
                   "| stages | prolificdreamer-geometry.yaml (16x16, grid 32): ms/step",
                   "| stages | prolificdreamer-texture.yaml (16x16, grid 32): ms/step"]:
        assert needle.split("|")[2].strip() in out, needle
    assert "FAILED" not in out
