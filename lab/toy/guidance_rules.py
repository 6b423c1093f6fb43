"""Every distillation rule of ``framework/guidance`` as a toy-prior rule (``lab.toy.studies.Rule``), for the one
comparison table of docs/guidance.md (``scripts/compare_guidance.py``).

Each rule is the toy recipe (``configs/toy/sds.yaml`` in 3D, ``configs/toy/sds-image.yaml`` in 2D; VSD's own toy
recipes for VSD, in 3D with the SDS recipe's scene losses) with the rule's guidance swapped in and its paper's
settings, as its full-size recipe in ``configs/`` sets them; only what ties a rule to a run length is shortened to the
toy's run (SDI's anneal, SDS-Bridge's second stage). Guidance scales are diffusers' CFG scales throughout
(``stable-diffusion-guidance`` and SDI's ``guidance_scale`` take threestudio's s, one less; the others take
diffusers' s).

What the toy cannot express: SDS-Bridge's source prompt ("<prompt>, oversaturated, smooth, ...") and NFSD's negative
prompt ("unrealistic, blurry, ...") use words the toy's text encoder never saw (the prompt processor says so in one
warning line); their rows show the rule's mechanics on the toy, not its intended effect.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

from lab.toy.studies import (SDS_3D, SDS_IMAGE, SDS_RECIPE_SETTINGS, VSD_3D, VSD_IMAGE, Rule, half_run_anneal,
                             sds_guidance_scale)


def _swap(loss: str, guidance_type: str, fields: Sequence[str]) -> Tuple[str, ...]:
    """Overrides that swap the SDS recipe's guidance for ``guidance_type`` whose loss is ``loss_<loss>``."""
    weights = ("system.loss.lambda_sds=0.0", f"system.loss.lambda_{loss}=1.0") if loss != "sds" else ()
    return (f"system.guidance_type={guidance_type}", *weights, *(f"system.guidance.{f}" for f in fields))


def rules(dim: str, steps: int) -> Dict[str, Rule]:
    """The rules in ``dim`` (``"2d"``: latent particles; ``"3d"``: a NeRF) for runs of ``steps`` steps."""
    sds, vsd = (SDS_3D, VSD_3D) if dim == "3d" else (SDS_IMAGE, VSD_IMAGE)
    table = {
        "sds": Rule("sds", "SDS (CFG 20)", sds, (f"system.guidance.guidance_scale={sds_guidance_scale(20)}",)),
        "sds-100": Rule("sds-100", "SDS (CFG 100, DreamFusion's)", sds,
                        (f"system.guidance.guidance_scale={sds_guidance_scale(100)}",)),
        "vsd": Rule("vsd", "VSD (CFG 7.5)", vsd, ("system.guidance.guidance_scale=7.5",
                                                  *(SDS_RECIPE_SETTINGS if dim == "3d" else ()))),
        "csd": Rule("csd", "CSD (w = 1, null baseline)", sds, _swap("sds", "stable-diffusion-csd-guidance", [
            "cond_scale=1.0", "uncond_scale=0.0", "null_scale=-1.0", "weighting_strategy=uniform"])),
        "nfsd": Rule("nfsd", "NFSD (s = 7.5, domain term below t = 200)", sds,
                     _swap("nfsd", "stable-diffusion-nfsd-guidance", ["guidance_scale=7.5",
                                                                      "negative_domain_max_step=200"])
                     + ("system.prompt_processor.negative_prompt=unrealistic, blurry, low quality, dull, dark",)),
        "sds-bridge": Rule("sds-bridge", "SDS-Bridge (SDS at CFG 100, bridge from half-way)", sds,
                           _swap("sds", "stable-diffusion-sds-bridge-guidance", [
                               "guidance_scale=100.0", "stage_one_weight=1.0", "stage_two_weight=1.0",
                               f"stage_two_start_step={steps // 2}", "weighting_strategy=uniform"])
                           + ("system.prompt_processor.src_modifier=oversaturated, smooth, blurry",
                              "system.prompt_processor.tgt_modifier=.")),
        "ism": Rule("ism", "ISM (CFG 7.5, delta t 50, 5 inversion steps)", sds,
                    _swap("ism", "stable-diffusion-ism-guidance", [
                        "guidance_scale=7.5", "weighting_strategy=ism", "delta_t=50", "xs_delta_t=200",
                        "xs_inv_steps=5", "xs_eta=0.0"]) + ("system.loss.lambda_ism=0.1",)),
        "sdi": Rule("sdi", "SDI (CFG 7.5, 10 inversion steps)", sds, _swap("sdi", "stable-diffusion-sdi-guidance", [
            f"guidance_scale={sds_guidance_scale(7.5)}", "enable_sdi=true", "inversion_guidance_scale=-7.5",
            "inversion_n_steps=10", "inversion_eta=0.3", "t_anneal=true", f"trainer_max_steps={steps}",
            "min_step_percent=0.25", "max_step_percent=0.98"])),
    }
    if dim == "3d":  # these act on renders and views
        table["hifa"] = Rule("hifa", "SDS + HiFA image loss (CFG 20, lambda_sds_img 0.01)", sds, (
            f"system.guidance.guidance_scale={sds_guidance_scale(20)}", "system.guidance.use_img_loss=true",
            "system.loss.lambda_sds_img=0.01"))
        table["perp-neg"] = Rule("perp-neg", "SDS + Perp-Neg (CFG 20)", sds, (
            f"system.guidance.guidance_scale={sds_guidance_scale(20)}", "system.prompt_processor.use_perp_neg=true"))
        # t's upper end annealed at half the run, after each rule's own overrides (SDI anneals its own)
        table = {k: r if k == "sdi" else Rule(r.key, r.label, r.config, (*r.overrides, half_run_anneal(steps)))
                 for k, r in table.items()}
    return table
