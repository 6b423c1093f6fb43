"""Score finished toy text-to-3D runs against their ground-truth primitives (lab/toy/trial.py, lab/toy/evaluate.py).

    python scripts/evaluate_toy.py outputs/toy-vsd/a_red_cube@20261126-101500 [more trial folders]

Prints one markdown row per trial and particle: silhouette IoU on the test orbit (higher is better), mean colour
error (lower is better), the best IoU another primitive reaches on the same views (the scale of a wrong answer), the
colour most views are judged to have, and the mean saturation of the covered pixels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from framework.errors import UserError  # noqa: E402


def evaluate_trial(trial: str | Path, ckpt: Optional[str] = None, n_views: Optional[int] = None,
                   particle: Optional[int] = 0) -> Dict[str, float]:
    """Scores of the trial folder ``trial`` on its test orbit (``lab.toy.trial.evaluate_trial``)."""
    from lab.toy.trial import evaluate_trial as evaluate

    return evaluate(trial, ckpt, n_views, particle)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trials", nargs="+", help="trial folders written by launch.py")
    p.add_argument("--ckpt", default=None, help="checkpoint to score (default: the trial's last.ckpt)")
    p.add_argument("--views", type=int, default=None, help="test-orbit views (default: the trial's n_test_views)")
    args = p.parse_args(argv)
    print("| trial | particle | IoU | colour error | other shapes' best IoU | colour | saturation |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    try:
        for trial in args.trials:
            for k, s in enumerate(evaluate_trial(trial, args.ckpt, args.views, particle=None)):
                print(f"| {Path(trial).parent.name}/{Path(trial).name} | {k} | {s['iou']:.3f} | "
                      f"{s['colour_error']:.3f} | {s['reference_iou']:.3f} | {s['colour']} | "
                      f"{s['saturation']:.2f} |", flush=True)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
