"""Sample the toy prior, judge the samples (lab.toy.judge), print the tables of docs/toy.md, save a grid.

    python scripts/sample_toy_prior.py [--model load/toy-sd] [--samples 4] [--open-samples 60] [--grid toy.png]

1. Full prompts: ``--samples`` samples of each of the 36 prompts "<a|an> <colour> <shape>"; the share whose judged
   colour and whose judged shape match the prompt, per shape and overall.
2. Under-specified prompts: ``--open-samples`` samples of each prompt that leaves the colour open ("a cube", ...)
   and of each that leaves the shape open ("a red object", ...): the judged histogram of the free attribute, how many
   of its values appear, and its total variation distance from uniform (0: every value equally often).
3. ``--saturation-prompts``: for full prompts, the mean foreground saturation of ``--saturation-samples`` samples
   against that of the ground-truth renders of the same primitive (random training cameras): whether the prior at
   this ``--cfg`` paints its colours as the renders it learnt from have them.
Sampling: DDIM, 30 steps, classifier-free guidance 7.5 (diffusers' convention), seed 0 (lab.toy.sampling).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="load/toy-sd")
    p.add_argument("--samples", type=int, default=4, help="samples per full prompt")
    p.add_argument("--open-samples", type=int, default=60, help="samples per under-specified prompt (0: none)")
    p.add_argument("--open-prompts", nargs="*", default=None,
                   help="the under-specified prompts (default: every shape-only and colour-only prompt)")
    p.add_argument("--saturation-prompts", nargs="*", default=[],
                   help="full prompts whose samples' saturation is compared with the ground truth's")
    p.add_argument("--saturation-samples", type=int, default=32)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--cfg", type=float, default=7.5)
    p.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm"])
    p.add_argument("--suffix", default="", help="appended to every prompt, e.g. ', front view'")
    p.add_argument("--grid", default=None, help="PNG to write: one row per full prompt")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if not (Path(args.model) / "model_index.json").is_file():
        print(f"error: --model {args.model}: not a diffusers model folder (no model_index.json); train one with "
              "scripts/train_toy_prior.py or give load/toy-sd", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    from lab.toy.dataset import base_prompt, colour_prompt, parse_prompt, shape_prompt
    from lab.toy.judge import colour_of, shape_of
    from lab.toy.metrics import total_variation
    from lab.toy.sampling import prior_samples
    from lab.toy.scenes import COLOURS, SHAPES

    for prompt in args.saturation_prompts:
        try:
            parse_prompt(prompt)
        except KeyError:
            print(f"error: --saturation-prompts {prompt!r}: not a full toy prompt (one colour and one shape, e.g. "
                  "'a green cone')", file=sys.stderr)
            return 2

    def sample(prompt: str, n: int, seed: int) -> torch.Tensor:
        return prior_samples(args.model, prompt + args.suffix, n, seed=seed, guidance_scale=args.cfg,
                             sampler=args.sampler, steps=args.steps)

    rows, colour_ok, shape_ok = [], {}, {}
    if args.samples:
        for k, (colour, shape) in enumerate((c, s) for c in COLOURS for s in SHAPES):
            images = sample(base_prompt(colour, shape), args.samples, seed=k)
            colour_ok.setdefault(shape, []).extend(c == colour for c in colour_of(images))
            shape_ok.setdefault(shape, []).extend(s == shape for s in shape_of(images)[0])
            rows.append(torch.cat(list(images), dim=1))
        print("| shape | colour right | shape right |")
        print("| --- | --- | --- |")
        for shape in SHAPES:
            print(f"| {shape} | {sum(colour_ok[shape])}/{len(colour_ok[shape])} | "
                  f"{sum(shape_ok[shape])}/{len(shape_ok[shape])} |")
        all_c = [v for vs in colour_ok.values() for v in vs]
        all_s = [v for vs in shape_ok.values() for v in vs]
        print(f"| all | {sum(all_c)}/{len(all_c)} ({100 * sum(all_c) / len(all_c):.1f}%) | "
              f"{sum(all_s)}/{len(all_s)} ({100 * sum(all_s) / len(all_s):.1f}%) |", flush=True)

    if args.open_samples:
        prompts = args.open_prompts if args.open_prompts is not None else (
            [shape_prompt(s) for s in SHAPES] + [colour_prompt(c) for c in COLOURS])
        print()
        print("| prompt | free attribute | judged histogram | values seen | TV from uniform | named attribute right |")
        print("| --- | --- | --- | --- | --- | --- |")
        tvs = []
        for k, prompt in enumerate(prompts):
            colour, shape = parse_prompt(prompt, partial=True)
            images = sample(prompt, args.open_samples, seed=1000 + k)
            colours, shapes = colour_of(images), shape_of(images)[0]
            free, values, named = ("colour", colours, shapes) if colour is None else ("shape", shapes, colours)
            support = list(COLOURS) if colour is None else list(SHAPES)
            hist = {v: values.count(v) / len(values) for v in support}
            others = len(values) - sum(values.count(v) for v in support)
            tv = total_variation(hist, {v: 1 / len(support) for v in support}) + 0.5 * others / len(values)
            tvs.append(tv)
            right = sum(x == (shape if colour is None else colour) for x in named)
            shown = ", ".join(f"{v} {values.count(v)}" for v in support) + (f", other {others}" if others else "")
            print(f"| {prompt} | {free} | {shown} | {sum(values.count(v) > 0 for v in support)}/{len(support)} | "
                  f"{tv:.3f} | {right}/{len(named)} |", flush=True)
        if len(tvs) > 1:
            print(f"| mean of the {len(tvs)} | | | | {sum(tvs) / len(tvs):.3f} | |", flush=True)
    if args.saturation_prompts:
        from lab.toy.dataset import IMAGE_SIZE, sample_cameras
        from lab.toy.metrics import foreground_saturation
        from lab.toy.scenes import render

        print()
        print("| prompt | CFG | samples' saturation | ground truth's | colour right |")
        print("| --- | --- | --- | --- | --- |")
        for k, prompt in enumerate(args.saturation_prompts):
            colour, shape = parse_prompt(prompt)
            n = args.saturation_samples
            images = sample(prompt, n, seed=2000 + k)
            truth, _ = render(shape, colour, sample_cameras(n, torch.Generator().manual_seed(2000 + k), IMAGE_SIZE))
            right = sum(c == colour for c in colour_of(images))
            print(f"| {prompt} | {args.cfg:g} | {foreground_saturation(images).mean():.3f} | "
                  f"{foreground_saturation(truth).mean():.3f} | {right}/{n} |", flush=True)
    if args.grid and rows:
        import imageio.v3 as iio

        grid = torch.cat(rows, dim=0)
        iio.imwrite(args.grid, (grid.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
        print(f"wrote {args.grid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
