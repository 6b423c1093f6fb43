"""Build a tiny random-weight Stable Diffusion checkpoint (diffusers format) offline, deterministically.

    python scripts/make_tiny_sd.py OUT_DIR [--prediction-type epsilon|v_prediction] [--seed N]

The result loads with ``from_pretrained`` like any SD checkpoint; point ``pretrained_model_name_or_path`` (and
``pretrained_model_name_or_path_lora``) at it to run a recipe in seconds on a CPU. The CLIP tokenizer vocabulary
comes from the PyPI package open_clip_torch. See ``lab/models/tiny_sd.py`` for the shapes.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from framework.errors import UserError  # noqa: E402
from lab.models.tiny_sd import build_tiny_sd  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder to write (created; existing files are overwritten)")
    parser.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], default="epsilon")
    parser.add_argument("--seed", type=int, default=None, help="weights seed (default: 0 for eps, 1 for v)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else (0 if args.prediction_type == "epsilon" else 1)
    try:
        out = build_tiny_sd(args.out_dir, prediction_type=args.prediction_type, seed=seed)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
