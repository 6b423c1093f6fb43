"""Score finished toy text-to-3D runs against their ground-truth primitives (lab/toy/trial.py, lab/toy/evaluate.py).

    python scripts/evaluate_toy.py outputs/toy-vsd/a_red_cube@20261126-101500 [more trial folders]

Prints one markdown row per trial and particle: silhouette IoU on the test orbit (higher is better), mean colour
error (lower is better), the best IoU another primitive reaches on the same views (the scale of a wrong answer), the
colour most views are judged to have, the mean saturation of the covered pixels and the mesh IoU: the volume IoU of
the run's surface (``geometry.isosurface()``) against the primitive (lab/toy/mesh_score.py). Stages 2 and 3 of the toy
chain are scored the same way (a geometry-stage run renders normals only: its colour scores are n/a).
``--scale-search`` adds the IoU against the primitive at the uniform scale that fits the silhouettes best, and that
scale (``lab.toy.evaluate.best_scale``): a wrong size told apart from a wrong shape.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from framework.errors import UserError  # noqa: E402
from lab.toy.cli import whole_number  # noqa: E402


def evaluate_trial(trial: str | Path, ckpt: Optional[str] = None, n_views: Optional[int] = None,
                   particle: Optional[int] = 0, isosurface_threshold: Optional[float] = None,
                   scale_search: bool = False):
    """Scores of the trial folder ``trial`` on its test orbit (``lab.toy.trial.evaluate_trial``)."""
    from lab.toy.trial import evaluate_trial as evaluate

    return evaluate(trial, ckpt, n_views, particle, isosurface_threshold, scale_search)


def _number(x: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trials", nargs="+", help="trial folders written by launch.py")
    p.add_argument("--ckpt", default=None, help="checkpoint to score (default: the trial's last.ckpt)")
    p.add_argument("--views", type=whole_number(1), default=None,
                   help="test-orbit views (default: the trial's n_test_views)")
    p.add_argument("--isosurface-threshold", type=float, default=None,
                   help="density at which a NeRF is meshed for the mesh IoU (default: the trial's "
                        "system.geometry.isosurface_threshold); use the value the next stage converts at")
    p.add_argument("--scale-search", action="store_true",
                   help="also the IoU against the primitive at the uniform scale (0.8-1.3) that fits best, and that "
                        "scale: a wrong size told apart from a wrong shape (12 views, 11 scales: seconds more)")
    args = p.parse_args(argv)
    scaled = " IoU at best scale | best scale |" if args.scale_search else ""
    print("| trial | particle | IoU | colour error | other shapes' best IoU | colour | saturation | mesh IoU |"
          + scaled)
    print("| --- " * (10 if args.scale_search else 8) + "|")
    try:
        for trial in args.trials:
            for k, s in enumerate(evaluate_trial(trial, args.ckpt, args.views, None, args.isosurface_threshold,
                                                 args.scale_search)):
                extra = f" {s['scaled_iou']:.3f} | {s['best_scale']:.2f} |" if args.scale_search else ""
                print(f"| {Path(trial).parent.name}/{Path(trial).name} | {k} | {s['iou']:.3f} | "
                      f"{_number(s['colour_error'])} | {s['reference_iou']:.3f} | {s['colour']} | "
                      f"{_number(s['saturation'], 2)} | {_number(s['mesh_iou'])} |{extra}", flush=True)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
