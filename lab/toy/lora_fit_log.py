"""The LoRA-fit diagnostic as a VSD run logged it (docs/guidance.md, "LoRA fit"), read back from its trial folder.

Every ``system.guidance.lora_fit_every`` steps a VSD run logs ``train/lora_fit/frozen``, ``train/lora_fit/lora`` and
their ratio to the trial's CSV log (``csv_logs/metrics.csv``, Lightning's ``CSVLogger``). The 3D ambiguity study
(``scripts/toy_studies.py ambiguity-3d``) prints the summary below for its VSD run, which is where docs/toy.md's
figures on the fit over a run (its first and last ratio, how often it is above 1 late in the run, the two errors early
and late) come from.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List

KEYS = {"frozen": "train/lora_fit/frozen", "lora": "train/lora_fit/lora", "ratio": "train/lora_fit/ratio"}


def lora_fit_log(trial: str | Path) -> List[Dict[str, float]]:
    """One dict per logged measurement of ``trial``: ``step`` (steps done when it was taken), ``frozen``, ``lora``,
    ``ratio``. Empty when the run logged none (SDS, ``lora_fit_every: 0``) or has no CSV log."""
    path = Path(trial) / "csv_logs" / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get(KEYS["ratio"])]
    # Lightning writes the index of the step being run; the measurement is taken after it
    return [{"step": int(row["step"]) + 1, **{k: float(row[key]) for k, key in KEYS.items()}} for row in rows]


def summarise_lora_fit(log: List[Dict[str, float]], late_from: int) -> Dict[str, float]:
    """``first`` and ``last`` ratio; ``late`` (measurements from step ``late_from`` on) and ``late_above_1`` (how many
    of them have the LoRA model's error above the frozen model's); the mean ``frozen`` and ``lora`` errors over the
    first and the last quarter of the run (``frozen_early``, ``frozen_late``, ``lora_early``, ``lora_late``)."""
    if not log:
        raise ValueError("no LoRA-fit measurements")
    end = log[-1]["step"]
    early = [m for m in log if m["step"] <= end / 4] or log[:1]
    late_quarter = [m for m in log if m["step"] > 3 * end / 4] or log[-1:]
    late = [m for m in log if m["step"] >= late_from]

    def mean(ms, key):
        return sum(m[key] for m in ms) / len(ms)

    return {"first": log[0]["ratio"], "last": log[-1]["ratio"], "late": len(late),
            "late_above_1": sum(m["ratio"] > 1 for m in late),
            "frozen_early": mean(early, "frozen"), "frozen_late": mean(late_quarter, "frozen"),
            "lora_early": mean(early, "lora"), "lora_late": mean(late_quarter, "lora")}


def describe_lora_fit(trial: str | Path, late_from: int) -> str:
    """One line on ``trial``'s LoRA fit over the run, or one saying that it logged none."""
    log = lora_fit_log(trial)
    where = Path(trial) / "csv_logs" / "metrics.csv"
    if not log:
        return f"LoRA fit: no measurements in {where}"
    s = summarise_lora_fit(log, late_from)
    return (f"LoRA fit ({KEYS['ratio']} in {where}, {len(log)} measurements): first {s['first']:.2f}, last "
            f"{s['last']:.2f}; from step {late_from} on above 1 at {s['late_above_1']} of {s['late']}; mean error "
            f"over the first and last quarter of the run: frozen {s['frozen_early']:.2f} -> {s['frozen_late']:.2f}, "
            f"LoRA {s['lora_early']:.2f} -> {s['lora_late']:.2f}")
