"""Scoring a finished toy text-to-3D trial folder (``scripts/evaluate_toy.py`` is its command line).

The trial's config (``configs/parsed.yaml``) and checkpoint are loaded, each particle's scene is rendered from the
test orbit, and the primitive the prompt names is rendered from the same cameras (``lab.toy.evaluate``). Per
particle:

* ``iou``, ``colour_error``: ``lab.toy.evaluate.scores`` against the ground truth;
* ``reference_iou``: the best IoU another primitive reaches against the ground truth on the same views;
* ``colour``: the judged colour (``lab.toy.judge.colour_of``) that most orbit views get; ``colour_right`` whether
  it is the prompt's;
* ``saturation``: mean HSV saturation of the pixels the scene covers (opacity > 0.5), over all views;
* ``best_scale``, ``scaled_iou`` (when asked): the uniform scale of the primitive that the silhouettes match best and
  the IoU there (``lab.toy.evaluate.best_scale``: a wrong size told apart from a wrong shape);
* ``mesh_iou``: the volume IoU of the particle's surface (``geometry.isosurface()``; a NeRF meshed at its
  ``isosurface_threshold`` or the one given) against the primitive (``lab.toy.mesh_score``); NaN with a warning when
  the field has no surface there.

A geometry-stage trial (stage 2 of the toy chain) renders normals only: its colour scores are NaN and its colour
"n/a"; it is scored on the prompt's colour.

A prompt that leaves the colour open (``"a cube"``) is scored against the primitive in the palette colour nearest to
the particle's own (its judged colour, or the nearest palette colour when it is judged grey); one that leaves the
shape open (``"a red object"``) against the shape with the best IoU.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from framework.errors import UserError


@dataclass
class LoadedTrial:
    """A trial's system (weights loaded, eval mode), test data and prompt."""

    system: Any
    datamodule: Any
    prompt: str
    step: float


def latest_checkpoint(trial: Path) -> Path:
    """``ckpts/last.ckpt``, else the newest checkpoint of the trial."""
    last = trial / "ckpts" / "last.ckpt"
    if last.is_file():
        return last
    ckpts = sorted((trial / "ckpts").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        raise UserError(f"no checkpoint in {trial / 'ckpts'}; train the run first or pass --ckpt")
    return ckpts[-1]


def load_trial(trial: str | Path, ckpt: Optional[str] = None, n_views: Optional[int] = None,
               isosurface_threshold: Optional[float] = None) -> LoadedTrial:
    """Build the system of ``trial`` from its parsed config and load its checkpoint (default: the latest); a NeRF's
    ``isosurface_threshold`` for the mesh IoU may be given (default: its config's)."""
    import launch
    from framework import registry
    from framework.experiment import load_experiment
    from omegaconf import OmegaConf

    trial = Path(trial)
    config = trial / "configs" / "parsed.yaml"
    if not config.is_file():
        raise UserError(f"{trial} is not a trial folder (no configs/parsed.yaml); give a folder a toy run wrote")
    launch.import_modules()
    overrides = [f"data.n_test_views={n_views}"] if n_views else []
    if isosurface_threshold is not None:
        overrides.append(f"system.geometry.isosurface_threshold={isosurface_threshold}")
    exp, cfg, _ = load_experiment(str(config), overrides)
    ckpt_path = Path(ckpt) if ckpt else latest_checkpoint(trial)
    if not ckpt_path.is_file():
        raise UserError(f"--ckpt {ckpt_path}: no such checkpoint file; give a .ckpt from the trial's ckpts/ folder")
    prompt = str(OmegaConf.select(cfg, "system.prompt_processor.prompt", default=""))
    datamodule = registry.find("data", exp.data_type)(exp.data, seed=exp.seed)
    # resumed: the checkpoint replaces the weights (a stage-2/3 system does not convert its stage-1 checkpoint again)
    system = registry.find("system", exp.system_type)(exp.system, seed=exp.seed, resumed=True)
    system.load_for_eval(str(ckpt_path))
    system.eval()
    return LoadedTrial(system, datamodule, prompt, float(getattr(system, "_loaded_step", math.nan)))


def _majority(words: List[str]) -> str:
    return Counter(words).most_common(1)[0][0] if words else "none"


@torch.no_grad()
def score_particles(loaded: LoadedTrial, scale_search: bool = False) -> List[Dict[str, Any]]:
    """The scores of the module docstring for every particle of a loaded 3D trial (``best_scale`` and
    ``scaled_iou`` with ``scale_search``)."""
    from lab.toy.dataset import parse_prompt
    from lab.toy.evaluate import best_scale, ground_truth, scores
    from lab.toy.judge import _chroma, colour_of, saturation
    from lab.toy.mesh_score import mesh_iou
    from lab.toy.scenes import COLOURS, SHAPES

    system = loaded.system
    if not hasattr(system, "particles") or not hasattr(system, "renderer"):
        raise UserError(f"the trial was trained by {type(system).registered_name}, which renders no 3D scene; score "
                        "text-to-3D trials (configs/toy/vsd.yaml, configs/toy/sds.yaml)")
    try:
        prompt_colour, prompt_shape = parse_prompt(loaded.prompt, partial=True)
    except KeyError as e:
        raise UserError(str(e.args[0])) from None
    batches = list(torch.utils.data.DataLoader(loaded.datamodule.test_dataset(), batch_size=None))
    results = []
    for scene in system.particles:
        pred, opacity = [], []
        for batch in batches:
            out = system.render(scene, batch)
            opacity.append(out["opacity"][..., 0].cpu())
            # a geometry-stage render has no colour: its silhouette alone is scored
            pred.append(out["comp_rgb"].cpu() if "comp_rgb" in out
                        else torch.full(out["opacity"].shape[:3] + (3,), math.nan))
        pred, opacity = torch.cat(pred), torch.cat(opacity)
        covered = opacity > 0.5
        has_colour = bool(torch.isfinite(pred).all())
        judged = _majority(colour_of(pred)) if has_colour else "n/a"
        colour = prompt_colour
        if colour is None and not has_colour:
            colour = next(iter(COLOURS))  # any: only the silhouette is scored
        elif colour is None:
            if judged in COLOURS:
                colour = judged
            else:  # grey or nothing: the palette colour nearest to the mean covered colour
                names = list(COLOURS)
                mean = pred[covered].mean(0) if covered.any() else torch.ones(3)
                refs = _chroma(torch.tensor([COLOURS[n] for n in names]))
                colour = names[int((refs - _chroma(mean)).norm(dim=-1).argmin())]
        gts = {s: [ground_truth(s, colour, b) for b in batches] for s in SHAPES}
        gts = {s: (torch.cat([g[0] for g in v]), torch.cat([g[1] for g in v])) for s, v in gts.items()}
        shape = prompt_shape or max(SHAPES, key=lambda s: scores(pred, opacity, *gts[s])["iou"])
        result: Dict[str, Any] = dict(scores(pred, opacity, *gts[shape]))
        gt_rgb, gt_cover = gts[shape]
        result["reference_iou"] = max(scores(gt_rgb, gts[o][1], gt_rgb, gt_cover)["iou"] for o in SHAPES if o != shape)
        result["colour"] = judged
        result["colour_right"] = prompt_colour is not None and judged == prompt_colour
        result["shape"] = shape
        result["saturation"] = saturation(pred[covered]).mean().item() if covered.any() and has_colour else math.nan
        if not has_colour:
            result["colour_error"] = math.nan
        if scale_search:
            result["best_scale"], result["scaled_iou"] = best_scale(opacity, shape, batches)
        try:
            mesh = scene.geometry.isosurface()
            result["mesh_iou"] = mesh_iou(mesh.v_pos, mesh.t_pos_idx, shape)
        except UserError as e:  # e.g. a NeRF with no surface at its threshold: say so, keep the other scores
            print(f"warning: no mesh IoU: {e}", file=sys.stderr)
            result["mesh_iou"] = math.nan
        result["views"] = float(pred.shape[0])
        result["step"] = loaded.step
        results.append(result)
    return results


def evaluate_trial(trial: str | Path, ckpt: Optional[str] = None, n_views: Optional[int] = None,
                   particle: Optional[int] = 0, isosurface_threshold: Optional[float] = None,
                   scale_search: bool = False):
    """Scores of ``trial`` on its test orbit: one dict for particle ``particle``, or a list for all (None)."""
    loaded = load_trial(trial, ckpt, n_views, isosurface_threshold)
    results = score_particles(loaded, scale_search)
    return results if particle is None else results[particle]
