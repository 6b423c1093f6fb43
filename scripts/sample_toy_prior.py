"""Sample the toy prior for every (colour, shape) prompt, judge the samples, save a grid.

    python scripts/sample_toy_prior.py [--model load/toy-sd] [--samples 4] [--grid toy-samples.png]

Prints the share of samples whose colour and whose shape match the prompt (lab.toy.judge), per shape and
overall. Sampling: DDIM, 30 steps, classifier-free guidance 7.5, seed 0.
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
    p.add_argument("--samples", type=int, default=4, help="samples per prompt")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--cfg", type=float, default=7.5)
    p.add_argument("--suffix", default="", help="appended to every prompt, e.g. ', front view'")
    p.add_argument("--grid", default=None, help="PNG to write: one row per prompt")
    args = p.parse_args(argv)
    if not (Path(args.model) / "model_index.json").is_file():
        print(f"error: --model {args.model}: not a diffusers model folder (no model_index.json); train one with "
              "scripts/train_toy_prior.py or give load/toy-sd", file=sys.stderr)
        return 2
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from lab.toy.dataset import base_prompt
    from lab.toy.judge import colour_of, shape_of, silhouette_bank
    from lab.toy.scenes import COLOURS, SHAPES

    pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float32, use_safetensors=True,
                                                   safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    bank = silhouette_bank()
    rows, colour_ok, shape_ok = [], {}, {}
    gen = torch.Generator().manual_seed(0)
    for colour in COLOURS:
        for shape in SHAPES:
            prompt = base_prompt(colour, shape) + args.suffix
            images = pipe([prompt] * args.samples, num_inference_steps=args.steps, guidance_scale=args.cfg,
                          generator=gen, output_type="pt").images.permute(0, 2, 3, 1)
            colours = colour_of(images)
            shapes, _ = shape_of(images, bank)
            colour_ok.setdefault(shape, []).extend(c == colour for c in colours)
            shape_ok.setdefault(shape, []).extend(s == shape for s in shapes)
            rows.append(torch.cat(list(images), dim=1))
    print("| shape | colour right | shape right |")
    print("| --- | --- | --- |")
    for shape in SHAPES:
        print(f"| {shape} | {sum(colour_ok[shape])}/{len(colour_ok[shape])} | "
              f"{sum(shape_ok[shape])}/{len(shape_ok[shape])} |")
    all_c = [v for vs in colour_ok.values() for v in vs]
    all_s = [v for vs in shape_ok.values() for v in vs]
    print(f"| all | {sum(all_c)}/{len(all_c)} ({100 * sum(all_c) / len(all_c):.0f}%) | "
          f"{sum(all_s)}/{len(all_s)} ({100 * sum(all_s) / len(all_s):.0f}%) |")
    if args.grid:
        import imageio.v3 as iio

        grid = torch.cat(rows, dim=0)
        iio.imwrite(args.grid, (grid.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
        print(f"wrote {args.grid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
