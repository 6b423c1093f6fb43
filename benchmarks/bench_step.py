"""One full text-to-3D training step, split into render, guidance and backward, for SDS and VSD.

The recipes are configs/dreamfusion-sd.yaml (SDS) and configs/prolificdreamer.yaml (VSD, separate v-prediction
unet_lora, and shared mode), with the tiny offline SD models built by lab/models/tiny_sd.py, at 64x64 renders
(the ProlificDreamer stage-1 resolution) and the recipes' full-size hash grid and 512 samples per ray. The step is
what BaseSystem.training_step does: render, guidance (forward of the frozen UNet and, for VSD, of the LoRA model),
regularisers, and one backward of the weighted loss (the optimizer step is excluded). Medians over --repeats steps
after one warm-up step.

    python benchmarks/bench_step.py [--resolution 64] [--samples 512] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import systems  # noqa: E402,F401
from framework import registry  # noqa: E402
from framework.builtin import import_builtin_modules  # noqa: E402
from framework.experiment import load_experiment  # noqa: E402
from lab.models.tiny_sd import build_tiny_sd  # noqa: E402
from framework.utils.seeding import generator  # noqa: E402
from systems.regularizers import REGULARIZERS  # noqa: E402


def build(recipe: str, overrides):
    exp, _, _ = load_experiment(recipe, overrides)
    dm = registry.find("data", exp.data_type)(exp.data, seed=0)
    system = registry.find("system", exp.system_type)(exp.system, seed=0)
    system.train()
    return system, dm


def one_step(system, batch, step: int):
    scene = system.particles[0]
    t0 = time.perf_counter()
    out = scene.renderer(**batch)
    t1 = time.perf_counter()
    losses = system.guidance(out["comp_rgb"], system.prompt_utils, **batch, rgb_as_latents=False)
    for name, fn in REGULARIZERS.items():
        if system.loss_enabled(name):
            losses[f"loss_{name}"] = fn(out)
    total = sum(system.cfg.loss[f"lambda_{k[5:]}"](step) * v for k, v in losses.items() if k.startswith("loss_"))
    t2 = time.perf_counter()
    total.backward()
    t3 = time.perf_counter()
    system.zero_grad(set_to_none=True)
    return t1 - t0, t2 - t1, t3 - t2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import_builtin_modules()
    tmp = Path(tempfile.mkdtemp())
    eps, v = str(build_tiny_sd(tmp / "eps", "epsilon", 0)), str(build_tiny_sd(tmp / "v", "v_prediction", 1))
    common = [
        f"system.prompt_processor.pretrained_model_name_or_path={eps}", "system.prompt_processor.prompt=a red cube",
        f"system.prompt_processor.cache_dir={tmp / 'cache'}", f"system.guidance.pretrained_model_name_or_path={eps}",
        f"data.height={args.resolution}", f"data.width={args.resolution}", "data.batch_size=1",
        f"system.renderer.num_samples_per_ray={args.samples}",
    ]
    cases = [
        ("SDS", "dreamfusion-sd.yaml", []),
        ("VSD separate", "prolificdreamer.yaml", [f"system.guidance.pretrained_model_name_or_path_lora={v}"]),
        ("VSD shared", "prolificdreamer.yaml", [f"system.guidance.pretrained_model_name_or_path_lora={eps}"]),
    ]
    print(f"# one training step at {args.resolution}x{args.resolution}, {args.samples} samples/ray, "
          f"{torch.get_num_threads()} threads, tiny SD; medians of {args.repeats} (seconds)")
    print("| case | render | guidance | backward | total |")
    print("|---|---|---|---|---|")
    for name, recipe, extra in cases:
        system, dm = build(recipe, common + extra)
        system.renderer.update_step(0, 0)
        times = []
        for i in range(args.repeats + 1):
            batch = dm.sample_train(i, generator(0, 0, i))
            times.append(one_step(system, batch, i))
        r, g, b = (statistics.median(t[k] for t in times[1:]) for k in range(3))
        print(f"| {name} | {r:.3f} | {g:.3f} | {b:.3f} | {r + g + b:.3f} |")


if __name__ == "__main__":
    main()
