"""Train the toy shape judge (lab.toy.judge.ShapeNet) and write its weights.

    python scripts/train_toy_judge.py            # writes lab/toy/shape_judge.safetensors (a few minutes, 1 thread)

Seeded: the same command gives the same weights on the same machine and library versions. Prints the judge's
accuracy on held-out ground-truth renders (another seed), per shape.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    from safetensors.torch import save_file

    from lab.toy.judge import SHAPE_JUDGE_FILE, judge_training_images, shape_of, train_shape_judge
    from lab.toy.scenes import SHAPES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(SHAPE_JUDGE_FILE))
    p.add_argument("--renders-per-shape", type=int, default=600)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    net = train_shape_judge(args.renders_per_shape, args.steps, seed=args.seed,
                            log=lambda m: print(f"[{time.time() - t0:.0f} s] {m}", flush=True))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, args.out)
    print(f"wrote {args.out}")
    images, labels = judge_training_images(100, seed=args.seed + 1000)
    shapes, _ = shape_of(images, net)
    names = list(SHAPES)
    for k, shape in enumerate(names):
        right = sum(s == shape for s, l in zip(shapes, labels.tolist()) if l == k)
        print(f"{shape}: {right}/100 held-out renders right")
    total = sum(s == names[l] for s, l in zip(shapes, labels.tolist()))
    print(f"all: {total}/{len(shapes)} ({100 * total / len(shapes):.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
