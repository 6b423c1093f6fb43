"""The checks that need a GPU, as one command that prints one table (about 5-8 minutes on an H100).

    python scripts/gpu_check.py                 # on a CUDA machine
    python scripts/gpu_check.py --dry-run       # the same steps on CPU with the tiny model and small sizes

1. Renderer: the CUDA path (nerfacc's occupancy-grid marching, packed rendering) against the CPU path (PyTorch
   sampler) on the same scenes (an analytic sphere, with its closed-form opacity error, and the implicit-volume blob):
   differences and milliseconds per render. The mesh rasterizer likewise: PyTorch on CUDA and nvdiffrast against CPU.
2. Guidance: one fp16 step (forward, backward, optimizer step) of SDS, VSD with a separate v-prediction unet_lora, and
   VSD with a shared UNet (also with lora_train_on_estimate), on SD 2.1-shaped models with random weights, from a
   64x64 render (encoded at 512x512): time per step and peak GPU memory.
3. Training: configs/vsd.yaml for --train-steps steps at 64x64 with those models (the full recipe otherwise):
   seconds per step and peak memory.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

Row = Tuple[str, str, str]


def renderer_rows(device: str, dry_run: bool) -> List[Row]:
    from lab.render_checks import agreement_report

    kwargs = dict(resolution=16, num_samples_per_ray=32, samplers=("torch", "torch")) if dry_run else {}
    if dry_run:
        kwargs["blob_config"] = {"pos_encoding_config": {"backend": "torch", "n_levels": 4, "log2_hashmap_size": 10}}
    report = agreement_report(device, **kwargs)
    rows = []
    for scene, metrics in report.items():
        for key, value in sorted(metrics.items()):
            rows.append(("renderer", f"{scene}: {key}", f"{value:.4g}"))
    return rows


def rasterizer_rows(device: str, dry_run: bool) -> List[Row]:
    from lab.raster_checks import gpu_check_rows  # nvdiff-rasterizer's back ends compared (docs/mesh.md)

    return gpu_check_rows(device, dry_run)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a (cpu)"
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GB"


def guidance_rows(device: torch.device, base: str, lora: str, work: Path, steps: int, res: int) -> List[Row]:
    import framework.guidance  # noqa: F401
    import framework.prompt_processors  # noqa: F401
    from framework import registry

    prompt_utils = registry.find("prompt_processor", "stable-diffusion-prompt-processor")(
        {"pretrained_model_name_or_path": base, "prompt": "a hamburger", "cache_dir": str(work / "emb")}
    )()
    cases = [
        ("SDS", "stable-diffusion-guidance", {"guidance_scale": 100.0}),
        ("VSD separate", "stable-diffusion-vsd-guidance", {"pretrained_model_name_or_path_lora": lora}),
        ("VSD shared", "stable-diffusion-vsd-guidance", {"pretrained_model_name_or_path_lora": base}),
        ("VSD shared, LoRA on estimate", "stable-diffusion-vsd-guidance",
         {"pretrained_model_name_or_path_lora": base, "lora_train_on_estimate": True}),
    ]
    rows: List[Row] = []
    base_ms = None
    for name, kind, extra in cases:
        torch.manual_seed(0)
        guidance = registry.find("guidance", kind)({"pretrained_model_name_or_path": base, **extra}).to(device)
        rgb = torch.rand(1, res, res, 3, device=device, requires_grad=True)
        opt = torch.optim.AdamW([rgb, *guidance.parameters()], lr=1e-3)
        cam = {
            "elevation": torch.zeros(1, device=device), "azimuth": torch.zeros(1, device=device),
            "camera_distances": torch.ones(1, device=device) * 1.5, "c2w": torch.eye(4, device=device)[None],
            "mvp_mtx": torch.eye(4, device=device)[None],
        }

        def step() -> None:
            out = guidance(rgb, prompt_utils, **cam)
            loss = sum(v for k, v in out.items() if k.startswith("loss_"))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()
        _peak_reset(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        ms = (time.perf_counter() - start) / steps * 1000
        base_ms = base_ms or ms
        rows.append(("guidance", f"{name}: ms/step (x SDS)", f"{ms:.1f} ({ms / base_ms:.2f}x)"))
        rows.append(("guidance", f"{name}: peak memory", _peak_gb(device)))
        guidance = opt = None  # free the models before the next case
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def training_rows(device: torch.device, base: str, lora: str, work: Path, steps: int, dry_run: bool) -> List[Row]:
    import launch

    overrides = [
        f"system.prompt_processor.pretrained_model_name_or_path={base}", "system.prompt_processor.prompt=a hamburger",
        f"system.prompt_processor.cache_dir={work / 'emb'}", f"system.guidance.pretrained_model_name_or_path={base}",
        f"system.guidance.pretrained_model_name_or_path_lora={lora}",
        "data.height=64", "data.width=64", "data.batch_size=1", "data.eval_height=64", "data.eval_width=64",
        "data.n_val_views=1", "data.n_test_views=4", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
        f"exp_root_dir={work / 'outputs'}", "use_timestamp=false", "tag=gpu-check",
    ]
    if dry_run:
        overrides += ["data.height=16", "data.width=16", "data.eval_height=16", "data.eval_width=16",
                      "system.renderer.num_samples_per_ray=16", "system.geometry.pos_encoding_config.n_levels=4",
                      "system.geometry.pos_encoding_config.log2_hashmap_size=10"]
    _peak_reset(device)
    start = time.perf_counter()
    code = launch.main(["--config", "vsd.yaml", "--train", *overrides])
    seconds = time.perf_counter() - start
    status = "ok" if code == 0 else f"FAILED (exit {code})"
    return [
        ("training", f"vsd.yaml {steps} steps + val + test: status", status),
        ("training", "wall seconds (incl. loading, validation, test video)", f"{seconds:.1f}"),
        ("training", "peak memory", _peak_gb(device)),
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny model, small sizes (checks the script itself)")
    p.add_argument("--guidance-steps", type=int, default=10)
    p.add_argument("--train-steps", type=int, default=100)
    p.add_argument("--work-dir", default=None)
    p.add_argument("--skip", nargs="*", default=[], choices=["renderer", "rasterizer", "guidance", "training"])
    args = p.parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="gpu_check_"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.dry_run:
        from lab.models.tiny_sd import build_tiny_sd

        device = torch.device("cpu")
        base = str(build_tiny_sd(work / "eps", "epsilon", 0))
        lora = str(build_tiny_sd(work / "v", "v_prediction", 1))
        res, g_steps, t_steps = 16, 1, 2
    else:
        if not torch.cuda.is_available():
            print("error: no CUDA device; run with --dry-run to check the script on CPU", file=sys.stderr)
            return 2
        from lab.models.sd21_shaped import build_sd21_shaped

        device = torch.device("cuda")
        t0 = time.perf_counter()
        base = str(build_sd21_shaped(work / "sd21-base", "epsilon", sample_size=64, seed=0))
        lora = str(build_sd21_shaped(work / "sd21-v", "v_prediction", sample_size=96, seed=1))
        print(f"built SD 2.1-shaped models in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        res, g_steps, t_steps = 64, args.guidance_steps, args.train_steps
    rows: List[Row] = [("device", "name", torch.cuda.get_device_name() if device.type == "cuda" else "cpu"),
                       ("device", "torch", torch.__version__)]
    for name, fn in (
        ("renderer", lambda: renderer_rows(device.type, args.dry_run)),
        ("rasterizer", lambda: rasterizer_rows(device.type, args.dry_run)),
        ("guidance", lambda: guidance_rows(device, base, lora, work, g_steps, res)),
        ("training", lambda: training_rows(device, base, lora, work, t_steps, args.dry_run)),
    ):
        if name in args.skip:
            continue
        start = time.perf_counter()
        try:
            rows += fn()
        except Exception as e:  # report and go on: one failing section must not hide the others
            rows.append((name, "FAILED", f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"))
        print(f"[{name}] {time.perf_counter() - start:.0f} s", file=sys.stderr)
    width = max(len(r[1]) for r in rows)
    print(f"| section | check{' ' * (width - 5)} | value |")
    print(f"|---|{'-' * (width + 2)}|---|")
    for section, check, value in rows:
        print(f"| {section} | {check:<{width}} | {value} |")
    return 0 if not any(r[1] == "FAILED" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
