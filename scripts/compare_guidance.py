"""Every distillation rule on the toy prior, in the same 2D and 3D settings: the comparison table of docs/guidance.md.

    python scripts/compare_guidance.py --dims 2d                 # the 2D table of docs/guidance.md
    python scripts/compare_guidance.py --dims 3d --steps-3d 400  # its 3D table (the recipe's 800 steps by default)
    python scripts/compare_guidance.py --dims 2d --rules sds vsd csd
    python scripts/compare_guidance.py --dims 3d data.n_test_views=8   # key=value overrides go to every run

2D: "a cube" (the colour left open), 8 latent particles, 500 steps (the setting of the 2D ambiguity study of
docs/toy.md, whose runs it shares): per set the shapes judged right, the distinct judged colours, the foreground's
saturation, the silhouette edge width, the spread (mean pairwise difference of the particles) and the judged colours'
distance from the prior's own samples.
3D: "a green cone", one NeRF, ``--steps-3d`` steps (t's upper end annealed at half of them, as the toy SDS recipe
does at 400 of its 800), seed 0, scored on a 24-view test orbit
(``lab.toy.trial``): IoU, colour error, saturation, judged colour (with ``--open-seeds N``, also "a cube" over N
seeds: how many colours).
Time per step is the training wall-clock over the steps (loading, validation and test video included, so a rough
guide on a shared machine). The rules and their settings: ``lab/toy/guidance_rules.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.toy.cli import fmt, whole_number  # noqa: E402


def table_2d(args, names: List[str]) -> List[str]:
    from lab.toy.guidance_rules import rules
    from lab.toy.judge import shape_of
    from lab.toy.metrics import describe_colours
    from lab.toy.studies import Setting, prior_2d, run_2d

    setting = Setting(args.prompt_2d, n_particles=args.particles, steps=args.steps_2d, seed=args.seed,
                      extra=tuple(args.extra))
    table = rules("2d", args.steps_2d)
    prior = prior_2d(setting, n_reference=args.reference_samples)
    rows = []
    for name in names:
        if name not in table:
            continue
        m = run_2d(table[name], setting, Path(args.out), prior["reference_histogram"], study="ambiguity-2d")
        shapes, _ = shape_of(m["images"])
        right = sum(s == "cube" for s in shapes)
        per_step = m["seconds"] / args.steps_2d
        rows.append(f"| {m['rule']} | {right}/{m['n']} | {m['distinct_colours']} | {describe_colours(m['colours'])} | "
                    f"{m['saturation']:.2f} | {m['edge_width']:.2f} | {m['spread']:.3f} | "
                    f"{fmt(m['tv_from_reference'], 2)} | {fmt(per_step * 1000, 0)} |")
        print(rows[-1], flush=True)
    shapes, _ = shape_of(prior["images"])
    rows.append(f"| the prior's own samples | {sum(s == 'cube' for s in shapes)}/{prior['n']} | "
                f"{prior['distinct_colours']} | {describe_colours(prior['colours'])} | {prior['saturation']:.2f} | "
                f"{prior['edge_width']:.2f} | {prior['spread']:.3f} | {fmt(prior['tv_from_reference'], 2)} | - |")
    header = [f"2D: \"{args.prompt_2d}\", {args.particles} latent particles, {args.steps_2d} steps, seed {args.seed}",
              "", "| rule | shape right | distinct colours | judged colours | saturation | edge width (px) | spread | "
              "TV from prior samples | ms per step |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    return header + rows


def table_3d(args, names: List[str]) -> List[str]:
    from lab.toy.guidance_rules import rules
    from lab.toy.studies import Setting, run_3d, summarise_3d

    table = rules("3d", args.steps_3d)
    extra = ("data.n_val_views=1", *args.extra)
    rows = []
    for name in names:
        if name not in table:
            continue
        rule = table[name]
        r = run_3d(rule, Setting(args.prompt_3d, n_particles=1, steps=args.steps_3d, seed=args.seed, extra=extra),
                   Path(args.out), study="compare-3d", n_views=args.views)
        p = r["particles"][0]
        open_colour = []
        for seed in range(args.seed, args.seed + args.open_seeds):
            o = run_3d(rule, Setting(args.prompt_open, n_particles=1, steps=args.steps_3d, seed=seed, extra=extra),
                       Path(args.out), study="compare-3d", n_views=args.views)
            open_colour += o["particles"]
        s = summarise_3d(open_colour) if open_colour else None
        opened = f"{s['distinct_colours']} ({', '.join(s['colours'])})" if s else "-"
        rows.append(f"| {rule.label} | {p['iou']:.3f} | {p['colour_error']:.3f} | {p['saturation']:.2f} | "
                    f"{p['colour']} | {opened} | {fmt(r['seconds'] / args.steps_3d * 1000, 0)} |")
        print(rows[-1], flush=True)
    header = [f"3D: \"{args.prompt_3d}\" (seed {args.seed}) and \"{args.prompt_open}\" (seeds {args.seed}.."
              f"{args.seed + args.open_seeds - 1}), {args.steps_3d} steps, {args.views}-view test orbit", "",
              f"| rule | IoU | colour error | saturation | judged colour | \"{args.prompt_open}\": distinct colours | "
              "ms per step |", "| --- | --- | --- | --- | --- | --- | --- |"]
    return header + rows


def main(argv=None) -> int:
    from lab.toy.guidance_rules import rules

    every = list(rules("3d", 1))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/guidance-compare", help="folder of the runs")
    p.add_argument("--dims", nargs="+", choices=["2d", "3d"], default=["2d", "3d"])
    p.add_argument("--rules", nargs="+", choices=every, default=every, help="give it after any overrides")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--prompt-2d", default="a cube")
    p.add_argument("--particles", type=whole_number(1), default=8)
    p.add_argument("--steps-2d", type=whole_number(1), default=500)
    p.add_argument("--prompt-3d", default="a green cone")
    p.add_argument("--prompt-open", default="a cube", help="3D prompt leaving the colour open")
    p.add_argument("--open-seeds", type=int, default=0, help="seeds of the open prompt per rule (default 0: skip)")
    p.add_argument("--steps-3d", type=whole_number(1), default=800)
    p.add_argument("--views", type=whole_number(1), default=24, help="views of the 3D scoring orbit")
    p.add_argument("--reference-samples", type=whole_number(1), default=64,
                   help="the prior's own samples the 2D histograms are compared with")
    p.add_argument("extra", nargs="*", help="more key=value overrides for every run (e.g. data.n_test_views=8)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from framework.errors import UserError

    try:
        lines: List[str] = []
        if "2d" in args.dims:
            lines += table_2d(args, args.rules) + [""]
        if "3d" in args.dims:
            lines += table_3d(args, args.rules)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a run failed: its own output above says why
        print(f"error: {e}", file=sys.stderr)
        return 1
    print()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
