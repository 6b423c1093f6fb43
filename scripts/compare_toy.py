"""Train toy SDS and VSD runs on several prompts (same seed, same steps) and print the table of docs/toy.md.

    python scripts/compare_toy.py                                    # the docs' table: 4 prompts x (SDS, VSD)
    python scripts/compare_toy.py --prompts "a red cube" --configs toy/vsd.yaml --steps 200

Each run is ``launch.py --config <config> --train`` with the prompt and ``trainer.max_steps`` overridden, written to
``--out/<config name>/<prompt>``; it is then scored by ``lab.toy.evaluate`` (silhouette IoU and colour error on
the test orbit). A run whose trial folder already holds a last.ckpt is scored without retraining.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_PROMPTS = ["a red cube", "a green cone", "a blue torus", "a yellow mug"]


def main(argv=None) -> int:
    import launch
    from framework.errors import UserError
    from evaluate_toy import evaluate_trial  # scripts/evaluate_toy.py, beside this file

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", nargs="+", default=DEFAULT_PROMPTS)
    p.add_argument("--configs", nargs="+", default=["toy/sds.yaml", "toy/vsd.yaml"])
    p.add_argument("--steps", type=int, default=None, help="trainer.max_steps (default: each config's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/toy-compare")
    p.add_argument("extra", nargs="*", help="more key=value overrides for every run")
    args = p.parse_args(argv)
    rows = []
    for prompt in args.prompts:
        for config in args.configs:
            name = Path(config).stem
            tag = prompt.replace(" ", "_")
            trial = Path(args.out) / name / tag
            overrides = [f"system.prompt_processor.prompt={prompt}", f"seed={args.seed}", f"exp_root_dir={args.out}",
                         f"name={name}", f"tag={tag}", "use_timestamp=false", *args.extra]
            if args.steps:
                overrides += [f"trainer.max_steps={args.steps}"]
            seconds = float("nan")
            if not (trial / "ckpts" / "last.ckpt").is_file():
                start = time.perf_counter()
                code = launch.main(["--config", config, "--train", *overrides])
                seconds = time.perf_counter() - start
                if code != 0:
                    print(f"error: the run {config} / {prompt!r} failed (exit {code})", file=sys.stderr)
                    return code
            try:
                s = evaluate_trial(trial)
            except UserError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            rows.append((prompt, name, s, seconds))
            print(f"{prompt} / {name}: IoU {s['iou']:.3f}, colour error {s['colour_error']:.3f}, "
                  f"{seconds:.0f} s", flush=True)
    print()
    print("| prompt | method | IoU | colour error | other shapes' best IoU | train seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for prompt, name, s, seconds in rows:
        print(f"| {prompt} | {name} | {s['iou']:.3f} | {s['colour_error']:.3f} | {s['reference_iou']:.3f} | "
              f"{seconds:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
