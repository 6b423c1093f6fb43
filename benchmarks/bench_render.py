"""Rendering throughput of nerf-volume-renderer: samples per second, forward and backward.

The scene is ProlificDreamer stage 1's at initialisation: implicit-volume with threestudio's hash grid (16 levels x 2
features, 2^19 entries) and its blob density, no-material, the neural environment-map background, 512 samples per ray,
64x64 renders from the random-camera datamodule (batch 1). Rows:

* ``grid: updated`` - the occupancy grid after its first update (as from training step 1 on): the usual case;
* ``grid: off`` - no empty-space skipping (grid_prune false): every sample of every ray reaches the network.

"samples" counts the points evaluated by the geometry with gradients (after skipping); "candidates" is rays x
num_samples_per_ray. Forward time includes sampling (and its density pre-pass), backward time is ``loss.backward()``.

    python benchmarks/bench_render.py [--resolution 64] [--samples 512] [--repeats 3] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import framework.backgrounds  # noqa: E402,F401
import framework.data  # noqa: E402,F401
import framework.geometry  # noqa: E402,F401
import framework.materials  # noqa: E402,F401
import framework.renderers  # noqa: E402,F401
from framework import registry  # noqa: E402
from framework.utils.seeding import generator  # noqa: E402


def build(device: torch.device, samples: int, grid_prune: bool):
    torch.manual_seed(0)
    geometry = registry.find("geometry", "implicit-volume")({}).to(device)
    material = registry.find("material", "no-material")({}).to(device)
    background = registry.find("background", "neural-environment-map-background")({}).to(device)
    renderer = registry.find("renderer", "nerf-volume-renderer")(
        {"num_samples_per_ray": samples, "grid_prune": grid_prune},
        geometry=geometry,
        material=material,
        background=background,
    ).to(device)
    for module in (geometry, material, background, renderer):
        module.train()
    renderer.update_step(0, 0)
    return geometry, renderer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(device: torch.device, resolution: int, samples: int, grid_prune: bool, repeats: int) -> dict:
    geometry, renderer = build(device, samples, grid_prune)
    data = registry.find("data", "random-camera-datamodule")(
        {"height": resolution, "width": resolution, "batch_size": 1}
    )
    fwd, bwd, counts = [], [], []
    for i in range(repeats + 1):
        batch = data.sample_train(i, generator(0, 0, i))
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        geometry.zero_grad(set_to_none=True)
        sync(device)
        t0 = time.perf_counter()
        out = renderer(batch["rays_o"], batch["rays_d"], batch["light_positions"])
        loss = out["comp_rgb"].mean() + out["opacity"].mean()
        sync(device)
        t1 = time.perf_counter()
        loss.backward()
        sync(device)
        t2 = time.perf_counter()
        if i > 0:  # the first iteration warms up allocators
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            counts.append(out["points"].shape[0])
    n = statistics.median(counts)
    return {
        "grid": "updated" if grid_prune else "off",
        "candidates": resolution * resolution * samples,
        "samples": int(n),
        "forward_s": statistics.median(fwd),
        "backward_s": statistics.median(bwd),
        "forward_samples_per_s": n / statistics.median(fwd),
        "backward_samples_per_s": n / statistics.median(bwd),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"nerf-volume-renderer, implicit-volume (threestudio hash grid), {args.resolution}x{args.resolution}, "
        f"{args.samples} samples/ray, device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(
        f"{'grid':<8} {'candidates':>10} {'samples':>9} {'fwd s':>7} {'bwd s':>7} "
        f"{'fwd samples/s':>14} {'bwd samples/s':>14}"
    )
    for grid_prune in (True, False):
        r = measure(device, args.resolution, args.samples, grid_prune, args.repeats)
        print(
            f"{r['grid']:<8} {r['candidates']:>10} {r['samples']:>9} {r['forward_s']:>7.3f} {r['backward_s']:>7.3f} "
            f"{r['forward_samples_per_s']:>14.3g} {r['backward_samples_per_s']:>14.3g}"
        )


if __name__ == "__main__":
    main()
