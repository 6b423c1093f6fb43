"""Time one guidance step (forward, backward, optimizer step) and its peak memory for SDS and VSD.

    python benchmarks/bench_guidance.py                     # tiny model
    python benchmarks/bench_guidance.py --model sd21        # SD 2.1-shaped UNet + VAE, random weights (minutes)
    python benchmarks/bench_guidance.py --model all --threads 2 --steps 20 --rounds 5

Each configuration runs in its own process (so peak memory is its own): the scene is a (1, S, S, 3) image tensor
trained with AdamW through the VAE encoder, as a render would be; VSD also trains its LoRA and camera embedding in
the same optimizer (one ``guidance`` parameter group). Configurations:

* ``sds``: ``stable-diffusion-guidance``;
* ``vsd-separate``: VSD with two UNets (``share_unet: false``), threestudio's layout of the models;
* ``vsd-shared``: VSD with one UNet for both branches (the default when both model paths are equal), the pretrained
  CFG pair and the LoRA estimate in one batched call (``batch_shared_unet_calls``, default);
* ``vsd-shared-unbatched``: the same as two calls (the adapters switched off for the pretrained one);
* ``vsd-shared-estimate``, ``vsd-separate-estimate``: the LoRA trained on the estimate's noisy latents (one LoRA
  forward instead of two);
* not in the default list: ``*-channels-last`` (``enable_channels_last_format``), ``*-compiled`` (``compile_unets:
  default``: each process compiles first, minutes on a CPU). ``lora_half_precision`` changes nothing where the
  frozen weights are fp32 (CPU) and is measured by ``scripts/gpu_check.py``.

The configurations are ``lab.guidance_bench.CONFIGS``; ``benchmarks/profile_vsd.py`` shows where their time goes.

Models: ``tiny`` is ``lab.models.tiny_sd`` (16x16 latents); ``sd21`` is a UNet and a VAE with SD 2.1's
configs and random weights (866 M + 84 M parameters) at ``--latent-size`` (16: a 128x128 image), written once under
``--work-dir``. Peak memory: on CUDA ``max_memory_allocated``; on CPU the peak resident set size during the timed
steps (Linux ``VmHWM`` after resetting it through ``/proc/self/clear_refs``), weights included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.guidance_bench import CONFIGS, DEFAULT_CONFIGS, build_case, prepare_model, random_prompt_utils  # noqa: E402


def prompt_utils_for(model: str, model_dir: Path, work_dir: Path, text_width: int):
    """Real prompt embeddings for the tiny model; random ones of SD 2.x's width for the SD 2.1-shaped UNet."""
    from framework import registry

    if model == "tiny":
        import framework.prompt_processors  # noqa: F401

        cls = registry.find("prompt_processor", "stable-diffusion-prompt-processor")
        return cls({"pretrained_model_name_or_path": str(model_dir), "prompt": "a photo of a cat",
                    "cache_dir": str(work_dir / "text_embeddings")})()
    return random_prompt_utils(text_width)


# ---------------------------------------------------------------------------------------------------- memory
def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------------------------------- worker
def worker(args: argparse.Namespace) -> Dict:
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    kind, overrides = CONFIGS[args.worker]
    model_dir = Path(args.model_dir)
    cfg = {"pretrained_model_name_or_path": str(model_dir), **overrides}
    if kind.endswith("vsd-guidance"):
        cfg["pretrained_model_name_or_path_lora"] = str(model_dir)
    if args.model == "sd21":
        cfg["image_size"] = args.latent_size * 8
    text_width = 32 if args.model == "tiny" else 1024
    pu = prompt_utils_for(args.model, model_dir, Path(args.work_dir), text_width)
    case = build_case(kind, cfg, device, prompt_utils=pu)
    guidance, step = case.guidance, case.step

    for _ in range(args.warmup):
        step()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    resident_mb = _status_kb("VmRSS") / 1024
    exact_peak = _reset_peak_rss()
    times: List[float] = []
    cpu_times: List[float] = []
    for _ in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = _status_kb("VmHWM") / 1024
    return {
        "config": args.worker, "model": args.model, "step_ms": 1000 * statistics.median(times),
        "step_ms_min": 1000 * min(times), "cpu_ms": 1000 * statistics.median(cpu_times), "peak_mb": peak_mb, "resident_before_mb": resident_mb,
        "peak_is_exact": exact_peak or cuda, "trainable_params": sum(p.numel() for p in guidance.parameters()),
    }


# ------------------------------------------------------------------------------------------------------ main
def run_all(args: argparse.Namespace) -> List[Dict]:
    """Every configuration in ``args.rounds`` interleaved rounds; per configuration the fastest round.

    A round's time is the median of its steps. Other jobs on a shared machine only ever slow a round down, so the
    fastest round is the least disturbed measurement (as ``timeit`` advises); all rounds are kept in the JSON.
    """
    models = ["tiny", "sd21"] if args.model == "all" else [args.model]
    rows = []
    for model in models:
        model_dir = prepare_model(model, Path(args.work_dir))
        steps = args.steps if args.steps else (20 if model == "tiny" else 3)
        runs: Dict[str, List[Dict]] = {name: [] for name in args.configs}
        for name in [n for _ in range(args.rounds) for n in args.configs]:
            cmd = [sys.executable, __file__, "--worker", name, "--model", model, "--model-dir", str(model_dir),
                   "--work-dir", args.work_dir, "--threads", str(args.threads), "--steps", str(steps),
                   "--warmup", str(args.warmup), "--latent-size", str(args.latent_size), "--device", args.device]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-3000:])
                raise SystemExit(f"benchmark worker {name} on {model} failed")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[name].append(row)
            print(f"{model:5s} {name:20s} {row['step_ms']:9.1f} ms  peak {row['peak_mb']:8.0f} MB", file=sys.stderr)
        for name, rs in runs.items():
            row = dict(rs[0])
            row["step_ms"] = min(r["step_ms"] for r in rs)
            row["cpu_ms"] = min(r["cpu_ms"] for r in rs)
            row["step_ms_rounds"] = [round(r["step_ms"], 2) for r in rs]
            row["peak_mb"] = statistics.median(r["peak_mb"] for r in rs)
            rows.append(row)
    return rows


def run_interleaved(args: argparse.Namespace) -> List[Dict]:
    """All configurations built in this process, their steps interleaved one by one (``--rounds`` x ``--steps``).

    On a machine shared with other jobs a disturbance then hits every configuration alike, so the ratios of the
    medians hold where separate processes drift apart. No memory figures (one process holds every model).
    """
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for model in (["tiny", "sd21"] if args.model == "all" else [args.model]):
        model_dir = prepare_model(model, Path(args.work_dir))
        text_width = 32 if model == "tiny" else 1024
        pu = prompt_utils_for(model, model_dir, Path(args.work_dir), text_width)
        cases = {}
        setup_s: Dict[str, float] = {}
        for name in args.configs:
            kind, overrides = CONFIGS[name]
            cfg = {"pretrained_model_name_or_path": str(model_dir), **overrides}
            if kind.endswith("vsd-guidance"):
                cfg["pretrained_model_name_or_path_lora"] = str(model_dir)
            if model == "sd21":
                cfg["image_size"] = args.latent_size * 8
            t0 = time.perf_counter()
            cases[name] = build_case(kind, cfg, device, prompt_utils=pu)
            for _ in range(args.warmup):
                cases[name].step()
            setup_s[name] = time.perf_counter() - t0  # with compile_unets: the compilation of every variant
        times: Dict[str, List[float]] = {name: [] for name in cases}
        cpu: Dict[str, List[float]] = {name: [] for name in cases}
        steps = args.steps if args.steps else (20 if model == "tiny" else 3)
        for _ in range(args.rounds * steps):
            for name, case in cases.items():
                t0, c0 = time.perf_counter(), time.process_time()
                case.step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
        for name, ts in times.items():
            rows.append({"config": name, "model": model, "step_ms": 1000 * statistics.median(ts),
                         "step_ms_min": 1000 * min(ts), "cpu_ms": 1000 * statistics.median(cpu[name]),
                         "peak_mb": float("nan"), "setup_s": setup_s[name]})
            print(f"{model:5s} {name:22s} median {rows[-1]['step_ms']:8.1f} ms  min {rows[-1]['step_ms_min']:8.1f} ms"
                  f"  cpu {rows[-1]['cpu_ms']:8.1f} ms  build + warm-up {setup_s[name]:6.1f} s", file=sys.stderr)
        del cases
    return rows


def table(rows: List[Dict], args: argparse.Namespace) -> str:
    lines = [
        f"torch {__import__('torch').__version__}, {args.threads} thread(s), device {args.device}, "
        f"{platform.processor() or platform.machine()}, "
        + (f"steps of all configurations interleaved in one process, median of {args.rounds * (args.steps or 20)}"
           if args.interleaved else f"fastest of {args.rounds} round(s)"),
        "",
        "| model | guidance | step (ms) | x SDS | CPU time (ms) | x SDS | peak memory (MB) | x SDS |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model in dict.fromkeys(r["model"] for r in rows):
        sds = next((r for r in rows if r["model"] == model and r["config"] == "sds"), None)
        for r in (r for r in rows if r["model"] == model):
            t = f"{r['step_ms'] / sds['step_ms']:.2f}" if sds else "-"
            m = f"{r['peak_mb'] / sds['peak_mb']:.2f}" if sds and r["peak_mb"] == r["peak_mb"] else "-"
            peak = f"{r['peak_mb']:.0f}" if r["peak_mb"] == r["peak_mb"] else "-"
            c = f"{r['cpu_ms'] / sds['cpu_ms']:.2f}" if sds else "-"
            lines.append(f"| {model} | {r['config']} | {r['step_ms']:.1f} | {t} | {r['cpu_ms']:.1f} | {c} | {peak} | {m} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["tiny", "sd21", "all"], default="tiny")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=DEFAULT_CONFIGS)
    p.add_argument("--steps", type=int, default=0, help="timed steps (default 20 tiny, 3 sd21)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of the whole set (fastest kept)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--latent-size", type=int, default=16, help="latent side for sd21 (image = 8x)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--work-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "bench_guidance"))
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--interleaved", action="store_true",
                   help="one process, the configurations' steps interleaved (robust ratios on a busy machine; no memory)")
    p.add_argument("--worker", choices=list(CONFIGS), help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    rows = run_interleaved(args) if args.interleaved else run_all(args)
    print(table(rows, args))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
