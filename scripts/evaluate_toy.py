"""Score finished toy text-to-3D runs against their ground-truth primitives (metrics: lab/toy/evaluate.py).

    python scripts/evaluate_toy.py outputs/toy-vsd/a_red_cube@20261126-101500 [more trial folders]

Prints one markdown row per trial: silhouette IoU on the test orbit (higher is better), mean colour error (lower is
better; n/a for a geometry-stage run, which renders normals only), the best IoU another primitive reaches on the same
views (the scale of a wrong answer) and the mesh IoU: the volume IoU of the run's surface (``geometry.isosurface()``)
against the primitive (lab/toy/mesh_score.py). Stages 2 and 3 of the toy chain are scored the same way.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Dict, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from framework.errors import UserError  # noqa: E402


def _latest_checkpoint(trial: Path) -> Path:
    last = trial / "ckpts" / "last.ckpt"
    if last.is_file():
        return last
    ckpts = sorted((trial / "ckpts").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        raise UserError(f"no checkpoint in {trial / 'ckpts'}; train the run first or pass --ckpt")
    return ckpts[-1]


@torch.no_grad()
def evaluate_trial(
    trial: str | Path,
    ckpt: Optional[str] = None,
    n_views: Optional[int] = None,
    isosurface_threshold: Optional[float] = None,
) -> Dict[str, float]:
    """Scores of the trial folder ``trial`` (its ``configs/parsed.yaml`` and checkpoint) on its test orbit, and the
    volume IoU of its surface (``mesh_iou``; a NeRF is meshed at ``isosurface_threshold``, default its config's).
    A geometry-stage trial renders no colour: its ``colour_error`` is NaN."""
    import launch
    from framework import registry
    from framework.experiment import load_experiment
    from lab.toy.dataset import parse_prompt
    from lab.toy.evaluate import ground_truth, scores
    from lab.toy.mesh_score import mesh_iou
    from lab.toy.scenes import SHAPES

    trial = Path(trial)
    config = trial / "configs" / "parsed.yaml"
    if not config.is_file():
        raise UserError(f"{trial} is not a trial folder (no configs/parsed.yaml); give a folder a toy run wrote")
    launch.import_modules()
    from omegaconf import OmegaConf

    overrides = [f"data.n_test_views={n_views}"] if n_views else []
    if isosurface_threshold is not None:
        overrides.append(f"system.geometry.isosurface_threshold={isosurface_threshold}")
    exp, cfg, _ = load_experiment(str(config), overrides)
    ckpt_path = Path(ckpt) if ckpt else _latest_checkpoint(trial)
    if not ckpt_path.is_file():
        raise UserError(f"--ckpt {ckpt_path}: no such checkpoint file; give a .ckpt from the trial's ckpts/ folder")
    try:
        colour, shape = parse_prompt(str(OmegaConf.select(cfg, "system.prompt_processor.prompt", default="")))
    except KeyError as e:
        raise UserError(str(e.args[0])) from None
    datamodule = registry.find("data", exp.data_type)(exp.data, seed=exp.seed)
    system = registry.find("system", exp.system_type)(exp.system, seed=exp.seed, resumed=True)
    if not hasattr(system, "renderer"):
        raise UserError(f"{trial} was trained by {exp.system_type}, which renders no 3D scene; score text-to-3D "
                        "trials (configs/toy/vsd.yaml, configs/toy/sds.yaml)")
    system.load_for_eval(str(ckpt_path))
    system.eval()
    preds, opacities, gts, covers, batches = [], [], [], [], []
    for batch in torch.utils.data.DataLoader(datamodule.test_dataset(), batch_size=None):
        out = system.render(system.particles[0], batch)
        # a geometry-stage render has no colour: score its silhouette alone
        no_colour = torch.full(out["opacity"].shape[:3] + (3,), math.nan)
        preds.append(out["comp_rgb"].cpu() if "comp_rgb" in out else no_colour)
        opacities.append(out["opacity"][..., 0].cpu())
        rgb, cover = ground_truth(shape, colour, batch)
        gts.append(rgb)
        covers.append(cover)
        batches.append(batch)
    pred, opacity, gt, cover = (torch.cat(x) for x in (preds, opacities, gts, covers))
    result = scores(pred, opacity, gt, cover)
    others = []
    for other in SHAPES:
        if other != shape:
            other_cover = torch.cat([ground_truth(other, colour, b)[1] for b in batches])
            others.append(scores(gt, other_cover, gt, cover)["iou"])
    result["reference_iou"] = max(others)
    try:
        mesh = system.geometry.isosurface()
        result["mesh_iou"] = mesh_iou(mesh.v_pos, mesh.t_pos_idx, shape)
    except UserError as e:  # e.g. a NeRF with no surface at its threshold: say so, keep the other scores
        print(f"warning: {trial}: no mesh IoU: {e}", file=sys.stderr)
        result["mesh_iou"] = math.nan
    if not torch.isfinite(pred).all():
        result["colour_error"] = math.nan
    result["views"] = float(pred.shape[0])
    result["step"] = float(getattr(system, "_loaded_step", math.nan))
    return result


def _number(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trials", nargs="+", help="trial folders written by launch.py")
    p.add_argument("--ckpt", default=None, help="checkpoint to score (default: the trial's last.ckpt)")
    p.add_argument("--views", type=int, default=None, help="test-orbit views (default: the trial's n_test_views)")
    p.add_argument("--isosurface-threshold", type=float, default=None,
                   help="density at which a NeRF is meshed for the mesh IoU (default: the trial's "
                        "system.geometry.isosurface_threshold); use the value the next stage converts at")
    args = p.parse_args(argv)
    print("| trial | IoU | colour error | other shapes' best IoU | mesh IoU |")
    print("| --- | --- | --- | --- | --- |")
    try:
        for trial in args.trials:
            s = evaluate_trial(trial, args.ckpt, args.views, args.isosurface_threshold)
            print(f"| {Path(trial).parent.name}/{Path(trial).name} | {s['iou']:.3f} | {_number(s['colour_error'])} | "
                  f"{s['reference_iou']:.3f} | {_number(s['mesh_iou'])} |", flush=True)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
