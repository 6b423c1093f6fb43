"""The LoRA-fit summary that the 3D ambiguity study prints for its VSD run (lab/toy/lora_fit_log.py), on a CSV log
written here whose figures are worked out by hand."""

import pytest

from lab.toy.lora_fit_log import describe_lora_fit, lora_fit_log, summarise_lora_fit

CSV = """epoch,step,train/loss,train/lora_fit/frozen,train/lora_fit/lora,train/lora_fit/ratio
0,9,0.5,,,
0,99,0.4,0.4,0.2,0.5
0,199,0.4,0.4,0.3,0.75
0,209,0.3,,,
0,299,0.3,0.2,0.3,1.5
0,399,0.3,0.2,0.22,1.1
"""


def trial(tmp_path, text=CSV):
    (tmp_path / "csv_logs").mkdir()
    (tmp_path / "csv_logs" / "metrics.csv").write_text(text)
    return tmp_path


def test_the_measurements_and_their_summary(tmp_path):
    log = lora_fit_log(trial(tmp_path))
    assert [m["step"] for m in log] == [100, 200, 300, 400]  # steps done; rows without a measurement skipped
    s = summarise_lora_fit(log, late_from=200)
    # late: steps 200, 300, 400 (ratios 0.75, 1.5, 1.1); first quarter of 400 steps: step 100; last: step 400
    assert (s["first"], s["last"], s["late"], s["late_above_1"]) == (0.5, 1.1, 3, 2)
    assert s["frozen_early"] == pytest.approx(0.4) and s["lora_early"] == pytest.approx(0.2)
    assert s["frozen_late"] == pytest.approx(0.2) and s["lora_late"] == pytest.approx(0.22)
    line = describe_lora_fit(tmp_path, 200)
    assert "4 measurements): first 0.50, last 1.10; from step 200 on above 1 at 2 of 3" in line
    assert "frozen 0.40 -> 0.20, LoRA 0.20 -> 0.22" in line


def test_a_run_without_measurements(tmp_path):
    assert lora_fit_log(tmp_path) == []  # no CSV log
    assert lora_fit_log(trial(tmp_path, "epoch,step,train/loss\n0,9,0.5\n")) == []  # SDS: no lora_fit columns
    assert describe_lora_fit(tmp_path, 1000) == f"LoRA fit: no measurements in {tmp_path / 'csv_logs' / 'metrics.csv'}"
    with pytest.raises(ValueError):
        summarise_lora_fit([], 1000)
