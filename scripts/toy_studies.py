"""The toy studies of docs/toy.md: each subcommand trains its runs (lab/toy/studies.py) and prints its table.

    python scripts/toy_studies.py panel            # configs/toy/vsd.yaml on the 12-prompt panel (the 3D target)
    python scripts/toy_studies.py ambiguity-2d     # "a cube", 8 latent particles: VSD 7.5, SDS 7.5 / 100, the prior
    python scripts/toy_studies.py calibration      # the same for VSD and three broken VSDs
    python scripts/toy_studies.py ambiguity-3d     # "a cube": 4 VSD particles against 4 SDS seeds
    python scripts/toy_studies.py cfg-sweep        # SDS and VSD at CFG 7.5, 20, 100 on two prompts

Runs go to ``--out/<study>/<rule>-<prompt>-s<seed>``; a run whose folder holds ckpts/last.ckpt is scored again
without retraining (delete the folder to retrain). CFG scales are diffusers' (the SDS configs get s - 1).
Train seconds are wall-clock on the machine at hand (on a shared machine, only a rough guide).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.toy.cli import fmt, whole_number  # noqa: E402

PANEL = [
    "a red cube", "a green cone", "a blue torus", "a yellow mug", "an orange sphere", "a purple cylinder",
    "a red mug", "a green sphere", "a blue cube", "a yellow cylinder", "an orange cone", "a purple torus",
]
"""Twelve prompts: each colour twice, each shape twice."""
CFG_PROMPTS = ["a red cube", "a green cone"]
CFG_SCALES = [7.5, 20.0, 100.0]


def set_row(m: Dict[str, Any]) -> str:
    from lab.toy.metrics import describe_colours

    fit = fmt(m["lora_fit"], 2) if "lora_fit" in m else "-"
    return (f"| {m['rule']} | {m['distinct_colours']} | {describe_colours(m['colours'])} | {m['saturation']:.2f} | "
            f"{m['edge_width']:.2f} | {m['spread']:.3f} | {fmt(m.get('tv_from_reference', float('nan')), 2)} | "
            f"{fit} | {fmt(m['seconds'], 0)} |")


SET_HEADER = ("| set | distinct colours | judged colours | saturation | edge width (px) | spread | TV from prior "
              "samples | LoRA fit | seconds |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def save_strip(path: Path, images) -> None:
    import imageio.v3 as iio
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    strip = torch.cat(list(images), dim=1)
    iio.imwrite(path, (strip.clamp(0, 1) * 255).round().to(torch.uint8).numpy())


def study_2d(args, rules) -> int:
    from lab.toy.studies import Setting, prior_2d, run_2d

    setting = Setting(args.prompt, n_particles=args.particles, steps=args.steps, seed=args.seed)
    prior = prior_2d(setting)
    rows = [prior]
    print(f"prior samples: {set_row(prior)}", flush=True)
    save_strip(Path(args.out) / "strips" / f"prior-{args.seed}.png", prior["images"])
    for rule in rules:
        m = run_2d(rule, setting, Path(args.out), prior["reference_histogram"])
        save_strip(Path(args.out) / "strips" / f"{rule.key}-{args.seed}.png", m["images"])
        rows.append(m)
        print(f"{rule.label}: {set_row(m)}", flush=True)
    print()
    print(SET_HEADER)
    for m in rows:
        print(set_row(m))
    return 0


def cmd_ambiguity_2d(args) -> int:
    from lab.toy.studies import RULES_2D

    return study_2d(args, list(RULES_2D.values()))


def cmd_calibration(args) -> int:
    from lab.toy.studies import BROKEN_2D, RULES_2D

    return study_2d(args, [RULES_2D["vsd"], *BROKEN_2D.values()])


def particle_rows(label: str, particles: List[Dict[str, Any]]) -> List[str]:
    return [f"| {label} | {k} | {p['colour']} | {p['saturation']:.2f} | {p['iou']:.3f} | {p['colour_error']:.3f} |"
            for k, p in enumerate(particles)]


def cmd_ambiguity_3d(args) -> int:
    from lab.toy.lora_fit_log import describe_lora_fit
    from lab.toy.studies import (SDS_3D, SDS_RECIPE_SETTINGS, VSD_3D, Setting, half_run_anneal, run_3d, sds_rule,
                                 summarise_3d, vsd_rule)

    extra = tuple(args.extra)

    spp = args.steps_per_particle
    results = []  # (label of the per-particle rows, label of the summary row, particles, seconds)
    if "vsd" in args.methods:
        cfg = args.vsd_cfg
        # the key of the runs at 7.5 predates the option: runs already trained there are found again
        key = "vsd-4particles" if cfg == 7.5 else f"vsd-{cfg:g}-4particles"
        vsd = run_3d(vsd_rule(VSD_3D, cfg, key=key, label=f"VSD, CFG {cfg:g}, 4 particles",
                              overrides=(*SDS_RECIPE_SETTINGS, half_run_anneal(4 * spp))),
                     Setting(args.prompt, n_particles=4, steps=4 * spp, seed=args.seed, extra=extra),
                     Path(args.out), study="ambiguity-3d", n_views=args.views)
        results.append((f"VSD, CFG {cfg:g}, 4 particles, {4 * spp} steps", "VSD", vsd["particles"], vsd["seconds"]))
        fit_line = describe_lora_fit(vsd["trial"], args.fit_late_from)
    if "sds" in args.methods:
        sds_particles, seconds = [], 0.0
        for seed in range(args.seed, args.seed + 4):
            r = run_3d(sds_rule(SDS_3D, args.sds_cfg, (half_run_anneal(spp),)),
                       Setting(args.prompt, n_particles=1, steps=spp, seed=seed, extra=extra),
                       Path(args.out), study="ambiguity-3d", n_views=args.views)
            sds_particles += r["particles"]
            seconds += r["seconds"]
        results.append((f"SDS, CFG {args.sds_cfg:g}, {spp} steps per seed", "SDS", sds_particles, seconds))
    print("| method | particle / seed | colour | saturation | IoU | colour error |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, _, parts, _ in results:
        for line in particle_rows(label, parts):
            print(line)
    print()
    print("| method | distinct colours | mean saturation | mean IoU | mean colour error | train seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for _, label, parts, secs in results:
        s = summarise_3d(parts)
        print(f"| {label} | {s['distinct_colours']} ({', '.join(s['colours'])}) | {s['saturation']:.2f} | "
              f"{s['iou']:.3f} | {s['colour_error']:.3f} | {fmt(secs, 0)} |")
    if "vsd" in args.methods:
        print()
        print(fit_line)
    return 0


def cmd_cfg_sweep(args) -> int:
    from lab.toy.studies import SDS_3D, SDS_RECIPE_SETTINGS, VSD_3D, Setting, run_3d, sds_rule, vsd_rule

    rows = []
    for prompt in args.prompts:
        for cfg in args.scales:
            for rule in (sds_rule(SDS_3D, cfg), vsd_rule(VSD_3D, cfg, overrides=SDS_RECIPE_SETTINGS)):
                r = run_3d(rule, Setting(prompt, n_particles=1, steps=None, seed=args.seed, extra=tuple(args.extra)),
                           Path(args.out), study="cfg-sweep", n_views=args.views)
                p = r["particles"][0]
                rows.append(f"| {prompt} | {rule.label.split(',')[0]} | {cfg:g} | {p['iou']:.3f} | "
                            f"{p['colour_error']:.3f} | {p['saturation']:.2f} | {p['colour']} |")
                print(rows[-1], flush=True)
    print()
    print("| prompt | method | CFG | IoU | colour error | saturation | judged colour |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    return 0


def cmd_panel(args) -> int:
    from lab.toy.studies import Rule, Setting, run_3d

    rule = Rule(Path(args.config).stem, f"toy/{args.config}", f"configs/toy/{args.config}", tuple(args.extra))
    rows, results = [], []
    for prompt in args.prompts:
        r = run_3d(rule, Setting(prompt, n_particles=1, steps=None, seed=args.seed), Path(args.out), study="panel",
                   n_views=args.views, scale_search=True)
        p = r["particles"][0]
        results.append((p, r["seconds"]))
        rows.append(f"| {prompt} | {p['colour']} | {'yes' if p['colour_right'] else 'no'} | {p['iou']:.3f} | "
                    f"{p['colour_error']:.3f} | {p['reference_iou']:.3f} | {p['scaled_iou']:.3f} | "
                    f"{p['best_scale']:.2f} | {p['saturation']:.2f} | {fmt(r['seconds'], 0)} |")
        print(rows[-1], flush=True)
    n = len(results)

    def mean(key: str) -> float:
        return sum(p[key] for p, _ in results) / n

    print()
    print("| prompt | judged colour | colour right | IoU | colour error | other shapes' best IoU | IoU at best scale | "
          "best scale | saturation | train seconds |")
    print("| --- " * 10 + "|")
    print("\n".join(rows))
    right = sum(bool(p["colour_right"]) for p, _ in results)
    print(f"| **all {n}** | | {right}/{n} | {mean('iou'):.3f} | {mean('colour_error'):.3f} | "
          f"{mean('reference_iou'):.3f} | {mean('scaled_iou'):.3f} | | {mean('saturation'):.2f} | |")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/toy-studies", help="folder of the runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=whole_number(1), default=1, help="torch CPU threads")
    sub = p.add_subparsers(dest="study", required=True)

    def add(name, fn, help):
        s = sub.add_parser(name, help=help)
        s.set_defaults(fn=fn)
        return s

    for name, fn, help in (("ambiguity-2d", cmd_ambiguity_2d, "VSD 7.5, SDS 7.5 and 100, the prior's samples"),
                           ("calibration", cmd_calibration, "VSD and the broken VSDs on the 2D study")):
        s = add(name, fn, help)
        s.add_argument("--prompt", default="a cube")
        s.add_argument("--particles", type=whole_number(1), default=8)
        s.add_argument("--steps", type=whole_number(1), default=500)
    s = add("ambiguity-3d", cmd_ambiguity_3d, "4 VSD particles against 4 SDS seeds")
    s.add_argument("--prompt", default="a cube")
    s.add_argument("--steps-per-particle", type=whole_number(1), default=800)
    s.add_argument("--sds-cfg", type=float, default=20.0, help="diffusers CFG of the SDS runs")
    s.add_argument("--vsd-cfg", type=float, default=7.5, help="diffusers CFG of the VSD run (ProlificDreamer's 7.5)")
    s.add_argument("--views", type=whole_number(1), default=24)
    s.add_argument("--fit-late-from", type=whole_number(0), default=1000,
                   help="the VSD run's LoRA-fit line counts the measurements above 1 from this step on")
    s.add_argument("--methods", nargs="+", choices=["vsd", "sds"], default=["vsd", "sds"],
                   help="train (and print) only these; give it after any overrides. Two processes, one per "
                        "method, use both cores; a run with both then scores the finished runs")
    s.add_argument("extra", nargs="*", help="more key=value overrides for every run")
    s = add("cfg-sweep", cmd_cfg_sweep, "SDS and VSD at several CFG scales in 3D")
    s.add_argument("--prompts", nargs="+", default=CFG_PROMPTS)
    s.add_argument("--scales", nargs="+", type=float, default=CFG_SCALES)
    s.add_argument("--views", type=whole_number(1), default=24)
    s.add_argument("extra", nargs="*", help="more key=value overrides for every run")
    s = add("panel", cmd_panel, "a toy 3D recipe on the 12-prompt panel")
    s.add_argument("--config", default="vsd.yaml", help="recipe under configs/toy/")
    s.add_argument("--prompts", nargs="+", default=PANEL)
    s.add_argument("--views", type=whole_number(1), default=60, help="test-orbit views (the recipe's own: 60)")
    s.add_argument("extra", nargs="*", help="more key=value overrides for every run")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from framework.errors import UserError

    try:
        return args.fn(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
