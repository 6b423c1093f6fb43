"""The toy studies as functions: run a *rule* (a way of distilling: a recipe plus overrides) on a *setting* (prompt,
particles, steps, seed) and return the metrics. ``scripts/toy_studies.py`` prints the tables of docs/toy.md from
them; slow tests and other comparisons call them directly.

    from lab.toy.studies import RULES_2D, Setting, run_2d, prior_2d
    reference = prior_2d(Setting("a cube"))                       # the prior's own samples
    vsd = run_2d(RULES_2D["vsd"], Setting("a cube"), Path("outputs/study"), reference["histogram"])
    vsd["distinct_colours"], vsd["saturation"], vsd["edge_width"], vsd["tv_from_reference"], vsd["lora_fit"]

Every run is ``launch.py --config <rule.config> --train`` in this process, written to
``<out>/<study>/<rule key>-<prompt>-s<seed>`` (a folder that already holds ``ckpts/last.ckpt`` is scored without
retraining). Guidance scales are given in diffusers' convention (``eps_uncond + s (eps_text - eps_uncond)``) and
converted where an SDS config is set: ``stable-diffusion-guidance`` takes threestudio's s, one less.

Importing this module registers the broken guidances of ``lab.toy.broken`` (the calibration variants).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

import lab.toy.broken  # noqa: F401  (registers the lab-vsd-* guidances)
from lab.toy.metrics import colour_histogram, set_metrics

REPO = Path(__file__).resolve().parents[2]
TOY_MODEL = "load/toy-sd"
"""The toy prior, relative to the repository root (runs start there)."""


def sds_guidance_scale(diffusers_scale: float) -> float:
    """The ``guidance_scale`` of ``stable-diffusion-guidance`` (threestudio's s) for a diffusers CFG scale."""
    return diffusers_scale - 1.0


@dataclass(frozen=True)
class Rule:
    """A way of distilling: a recipe and overrides of it."""

    key: str
    """Short name used in folder names (``vsd``, ``sds-100``)."""
    label: str
    """What a table calls it (``VSD, CFG 7.5``)."""
    config: str
    """The recipe, relative to the repository root."""
    overrides: Tuple[str, ...] = ()
    """``key=value`` overrides of the recipe."""


def vsd_rule(config: str, cfg: float = 7.5, key: Optional[str] = None, label: Optional[str] = None,
             overrides: Sequence[str] = ()) -> Rule:
    """VSD at diffusers CFG ``cfg``."""
    return Rule(key or f"vsd-{cfg:g}", label or f"VSD, CFG {cfg:g}", config,
                (f"system.guidance.guidance_scale={cfg}", *overrides))


def sds_rule(config: str, cfg: float, overrides: Sequence[str] = ()) -> Rule:
    """SDS at diffusers CFG ``cfg`` (set as threestudio's ``cfg - 1``)."""
    return Rule(f"sds-{cfg:g}", f"SDS, CFG {cfg:g}", config,
                (f"system.guidance.guidance_scale={sds_guidance_scale(cfg)}", *overrides))


VSD_IMAGE, SDS_IMAGE = "configs/toy/vsd-image.yaml", "configs/toy/sds-image.yaml"
VSD_3D, SDS_3D = "configs/toy/vsd.yaml", "configs/toy/sds.yaml"


SCHEDULE_KEYS: Tuple[str, ...] = ("min_step_percent", "max_step_percent")
"""The guidance's timestep schedule (under ``system.guidance``), which :func:`shared_setting_overrides` aligns too."""


def shared_setting_overrides(config: str, like: str) -> Tuple[str, ...]:
    """Overrides that give a run of ``config`` the scene losses and the timestep schedule of ``like``: every
    ``system.loss`` weight both recipes set, and each of ``system.guidance``'s ``SCHEDULE_KEYS``, where they differ, at
    ``like``'s value (the guidance's own weights, ``lambda_vsd``, ``lambda_sds``, appear in one recipe only and are
    left alone)."""
    from omegaconf import OmegaConf

    mine, theirs = (OmegaConf.to_container(OmegaConf.load(REPO / c).system) for c in (config, like))
    mine_loss, mine_guidance = mine.get("loss", {}), mine.get("guidance", {})
    loss, guidance = theirs.get("loss", {}), theirs.get("guidance", {})
    out = [f"system.loss.{k}={v}" for k, v in sorted(loss.items()) if k in mine_loss and mine_loss[k] != v]
    out += [f"system.guidance.{k}={guidance[k]}" for k in SCHEDULE_KEYS
            if k in guidance and mine_guidance.get(k) != guidance[k]]
    return tuple(out)


SDS_RECIPE_SETTINGS: Tuple[str, ...] = shared_setting_overrides(VSD_3D, SDS_3D)
"""Overrides that give a run of ``VSD_3D`` the scene losses and the timestep schedule of ``SDS_3D``: without the
opacity and depth-variance losses of the toy ProlificDreamer recipe (DreamFusion's recipe has neither), with t drawn
from the SDS recipe's 0.02 instead of the VSD recipe's 0.5, and with t's upper end annealed at half the run, as the SDS
recipe does, so that a 3D comparison of VSD with SDS or the other rules measures the guidance alone."""


def half_run_anneal(steps: int) -> str:
    """The override that anneals t's upper end to 0.5 at half a run of ``steps`` steps, as the SDS recipe does at 400
    of its 800: the 3D comparisons use it at any run length, after each rule's own overrides."""
    return f"system.guidance.max_step_percent=[{steps // 2},0.98,0.5,{steps // 2 + 1}]"

RULES_2D: Dict[str, Rule] = {
    "vsd": vsd_rule(VSD_IMAGE, 7.5, key="vsd"),
    "sds-7.5": sds_rule(SDS_IMAGE, 7.5),
    "sds-100": sds_rule(SDS_IMAGE, 100.0),
}
"""The 2D ambiguity study's rules."""

BROKEN_2D: Dict[str, Rule] = {
    "vsd-lora-lr0": vsd_rule(VSD_IMAGE, 7.5, key="vsd-lora-lr0", label="VSD, LoRA learning rate 0",
                             overrides=("system.optimizer.params.guidance.lr=0",)),
    "vsd-no-camera": vsd_rule(VSD_IMAGE, 7.5, key="vsd-no-camera", label="VSD, camera embedding off",
                              overrides=("system.guidance_type=lab-vsd-no-camera",)),
    "vsd-noise-lora": vsd_rule(VSD_IMAGE, 7.5, key="vsd-noise-lora", label="VSD, LoRA trained on pure noise",
                               overrides=("system.guidance_type=lab-vsd-noise-lora",)),
}
"""What a broken VSD would look like (``lab.toy.broken``): the calibration of the 2D study."""


@dataclass(frozen=True)
class Setting:
    """What a rule is run on."""

    prompt: str = "a cube"
    """The prompt (the prior's words)."""
    n_particles: int = 8
    """Image particles (2D) or scenes (3D)."""
    steps: Optional[int] = 500
    """``trainer.max_steps``; None keeps the recipe's."""
    seed: int = 0
    """The run's seed."""
    extra: Tuple[str, ...] = field(default_factory=tuple)
    """More overrides for every run (e.g. smaller test orbits)."""


SECONDS_FILE = "train_seconds.txt"
"""Wall-clock seconds of a study run's ``launch.py`` call, in its trial folder."""


def slug(text: str) -> str:
    """A folder-safe form of ``text``: ``"a red cube"`` -> ``a_red_cube``."""
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_") or "empty"


def train(rule: Rule, setting: Setting, out: Path, study: str) -> Tuple[Path, float]:
    """Train ``rule`` on ``setting`` (unless its trial folder holds a last.ckpt); the trial and the seconds its
    training took (kept in the trial's ``train_seconds.txt``; NaN for a run trained before that file existed)."""
    import launch

    tag = f"{rule.key}-{slug(setting.prompt)}-s{setting.seed}"
    out = Path(out).resolve()
    trial = out / study / tag
    if (trial / "ckpts" / "last.ckpt").is_file():
        seconds = trial / SECONDS_FILE
        return trial, float(seconds.read_text()) if seconds.is_file() else float("nan")
    if trial.exists():
        from framework.errors import UserError

        raise UserError(f"{trial} holds an unfinished run (no ckpts/last.ckpt); delete that folder to train it again")
    overrides = [
        f"system.prompt_processor.prompt={setting.prompt}", f"seed={setting.seed}", f"exp_root_dir={out}",
        f"name={study}", f"tag={tag}", "use_timestamp=false", f"system.n_particles={setting.n_particles}",
        *rule.overrides, *setting.extra,
    ]
    if setting.steps is not None:
        overrides.append(f"trainer.max_steps={setting.steps}")
    start = time.perf_counter()
    code = launch.main(["--config", str(REPO / rule.config), "--train", *overrides])
    if code != 0:
        raise RuntimeError(f"the run {rule.label} on {setting.prompt!r} failed (exit {code}); see its output above")
    seconds = time.perf_counter() - start
    (trial / SECONDS_FILE).write_text(f"{seconds:.1f}\n")
    return trial, seconds


# ------------------------------------------------------------------------------------------------ 2D study
@torch.no_grad()
def lora_fit(guidance, latents: torch.Tensor, prompt_utils, cameras: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """The VSD guidance's LoRA-fit diagnostic (``framework.guidance.lora_fit``, docs/guidance.md) on the final
    particles' latents (N, 4, h, w), with the guidance's own LoRA forward, schedule, timesteps, seed and scale:
    ``lora_loss``, ``frozen_loss`` and their ratio ``lora_fit`` (below 1: the LoRA learnt the particles' score).

    ``cameras`` hold (N,) elevation, azimuth, camera_distances and (N, 4, 4) c2w, mvp_mtx.
    """
    from framework.guidance.camera_embedding import camera_condition
    from framework.guidance.lora_fit import lora_fit as diagnostic

    n = latents.shape[0]
    text = prompt_utils.get_text_embeddings(cameras["elevation"], cameras["azimuth"], cameras["camera_distances"],
                                            view_dependent_prompting=False)[:n]
    camera = camera_condition(guidance.cfg.camera_condition_type, cameras["c2w"], cameras["mvp_mtx"],
                              cameras["elevation"], cameras["azimuth"], cameras["camera_distances"])
    fit = diagnostic(guidance.lora_forward, guidance.lora_schedule, latents, text, camera,
                     guidance.cfg.lora_fit_timesteps, guidance.cfg.lora_scale, guidance.cfg.lora_fit_seed)
    return {"lora_loss": fit["lora_fit/lora"], "frozen_loss": fit["lora_fit/frozen"], "lora_fit": fit["lora_fit/ratio"]}


def score_images(trial: Path) -> Tuple[torch.Tensor, Dict[str, float]]:
    """The decoded particles ``(N, H, W, 3)`` of a text-to-image trial, and the LoRA fit when it ran VSD."""
    from lab.toy.trial import load_trial
    from systems.text_to_image import null_camera

    loaded = load_trial(trial)
    system = loaded.system
    images = system.decoded()
    fit: Dict[str, float] = {}
    if hasattr(system.guidance, "lora_eps"):
        latents = system.particles.detach() if system.cfg.rgb_as_latents else system.guidance.prepare_latents(
            images, False)
        fit = lora_fit(system.guidance, latents, system.prompt_utils, null_camera(latents.shape[0], latents.device))
    return images, fit


def run_2d(rule: Rule, setting: Setting, out: Path, reference: Optional[Dict[str, float]] = None,
           study: str = "ambiguity-2d") -> Dict[str, Any]:
    """Train ``rule`` (a text-to-image recipe) on ``setting`` and return :func:`lab.toy.metrics.set_metrics` of
    its particles, with ``lora_fit`` / ``lora_loss`` / ``frozen_loss`` for VSD and the training ``seconds``."""
    trial, seconds = train(rule, setting, out, study)
    images, fit = score_images(trial)
    metrics = set_metrics(images, reference)
    metrics.update(fit)
    metrics.update(rule=rule.label, trial=str(trial), seconds=seconds, images=images)
    return metrics


def prior_2d(setting: Setting, n_reference: int = 64, guidance_scale: float = 7.5, sampler: str = "ddpm",
             model: str = TOY_MODEL) -> Dict[str, Any]:
    """The prior's own (ancestral) samples of ``setting.prompt`` at diffusers CFG ``guidance_scale``: the set
    metrics of ``setting.n_particles`` of them (seed ``setting.seed``), and ``histogram`` over ``n_reference`` more
    (another seed), the reference the particles' histograms are compared with."""
    from lab.toy.sampling import prior_samples

    path = str(REPO / model)
    start = time.perf_counter()
    reference = prior_samples(path, setting.prompt, n_reference, seed=setting.seed + 1000,
                              guidance_scale=guidance_scale, sampler=sampler)
    images = prior_samples(path, setting.prompt, setting.n_particles, seed=setting.seed,
                           guidance_scale=guidance_scale, sampler=sampler)
    from lab.toy.judge import colour_of

    hist = colour_histogram(colour_of(reference))
    metrics = set_metrics(images, hist)
    metrics.update(rule=f"prior samples ({sampler}), CFG {guidance_scale:g}", reference_histogram=hist,
                   seconds=time.perf_counter() - start, images=images)
    return metrics


# ------------------------------------------------------------------------------------------------ 3D studies
def run_3d(rule: Rule, setting: Setting, out: Path, study: str = "toy-3d", n_views: int = 24,
           scale_search: bool = False) -> Dict[str, Any]:
    """Train ``rule`` (a text-to-3D recipe) on ``setting`` and score every particle on a ``n_views``-view test orbit
    (``lab.toy.trial.score_particles``, with the best-scale IoU if ``scale_search``): ``particles`` (one dict each)
    and the training ``seconds``."""
    from lab.toy.trial import load_trial, score_particles

    trial, seconds = train(rule, setting, out, study)
    particles = score_particles(load_trial(trial, n_views=n_views), scale_search)
    return {"rule": rule.label, "trial": str(trial), "seconds": seconds, "particles": particles}


def summarise_3d(particles: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Means over particles (or seeds) and the distinct palette colours among them."""
    from lab.toy.scenes import COLOURS

    n = len(particles)
    return {
        "iou": sum(p["iou"] for p in particles) / n,
        "colour_error": sum(p["colour_error"] for p in particles) / n,
        "saturation": sum(p["saturation"] for p in particles) / n,
        "colours": [p["colour"] for p in particles],
        "distinct_colours": len({p["colour"] for p in particles if p["colour"] in COLOURS}),
        "colour_right": sum(bool(p["colour_right"]) for p in particles),
    }


def with_setting(setting: Setting, **changes: Any) -> Setting:
    """``setting`` with some fields changed."""
    return replace(setting, **changes)
